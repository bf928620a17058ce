//! Maintenance mode (`vipd drain`, `vipd undrain`): a drained node gives its VIPs to its
//! peers and leaves its VRRP groups, as for a failing health check, and stays out of
//! placement until undrained — across restarts: the mark is a file in the state directory
//! (`<state_dir>/<instance>.drained`), like HAProxy's drain state or `kubectl drain`.

use std::{io, path::Path};

/// Whether the node is marked drained.
pub fn is_marked(path: &Path) -> bool {
    path.exists()
}

/// Marks the node drained (or not), so a restart keeps it.
pub fn mark(path: &Path, drained: bool) -> io::Result<()> {
    if drained {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            path,
            "drained: `vipd undrain` returns this node to its pool\n",
        )
    } else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_survives_until_removed() {
        let dir = std::env::temp_dir().join(format!("vipd-drain-{}", std::process::id()));
        let path = dir.join("sub").join("eth0-1.drained");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!is_marked(&path));
        mark(&path, true).unwrap();
        assert!(is_marked(&path));
        mark(&path, true).unwrap();
        mark(&path, false).unwrap();
        assert!(!is_marked(&path));
        mark(&path, false).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
