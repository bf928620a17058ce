//! This daemon's incarnation: a number that grows with every start and never goes back,
//! even when the clock does.
//!
//! Peers refuse an incarnation lower than the last they recorded (a replay), so one taken
//! straight from CLOCK_REALTIME would lock a node out after its clock stepped back. The
//! last one used is kept in `<state_dir>/<instance>.incarnation`; the next is
//! `max(realtime, last + 1)`.

use std::path::Path;

use tracing::warn;

/// The incarnation after `last` (if any) at realtime `now_ns`.
pub fn choose(now_ns: u64, last: Option<u64>) -> u64 {
    last.map_or(now_ns, |l| now_ns.max(l.saturating_add(1)))
}

/// The next incarnation, recorded in `path` before it is used. Without a readable and
/// writable state file it warns and uses the clock alone.
pub fn next(path: &Path, now_ns: u64) -> u64 {
    let last = match std::fs::read_to_string(path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(l) => Some(l),
            Err(_) => {
                warn!(file = %path.display(), "ignoring a malformed incarnation file");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!(file = %path.display(), "reading the incarnation file: {e}");
            None
        }
    };
    let next = choose(now_ns, last);
    if let Err(e) = save(path, next) {
        warn!(
            file = %path.display(),
            "cannot record the incarnation ({e}): if this node's clock steps back before its \
             next start, peers will refuse its heartbeats as replays until they restart"
        );
    }
    next
}

/// Writes `value` to `path` atomically (a temporary file renamed over it, synced).
fn save(path: &Path, value: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("incarnation.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_back() {
        assert_eq!(choose(100, None), 100);
        assert_eq!(choose(100, Some(50)), 100);
        // The clock stepped back: one more than the last.
        assert_eq!(choose(100, Some(500)), 501);
        assert_eq!(choose(100, Some(u64::MAX)), u64::MAX);
    }

    #[test]
    fn recorded_and_read_back() {
        let dir = std::env::temp_dir().join(format!("vipd-incarnation-{}", std::process::id()));
        let path = dir.join("sub").join("eth0-1.incarnation");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(next(&path, 1000), 1000);
        assert_eq!(next(&path, 10), 1001);
        assert_eq!(next(&path, 5000), 5000);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(next(&path, 7), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
