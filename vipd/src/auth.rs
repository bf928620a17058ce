//! The heartbeat authentication key file: 32 hex characters (a 128-bit SipHash key),
//! readable by its owner only, and `vipd keygen`, which writes one.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

pub use vipd_common::auth::Key;

/// Hex characters in a key file.
const KEY_HEX_LEN: usize = 32;

/// Parses a key file's text: 32 hex characters, surrounding whitespace ignored. Errors
/// never quote the text (it is a secret).
pub fn parse_key(text: &str) -> Result<Key, String> {
    let hex = text.trim();
    if hex.len() != KEY_HEX_LEN {
        return Err(format!(
            "expected {KEY_HEX_LEN} hex characters (a 128-bit key, as `vipd keygen` writes), found {} characters",
            hex.chars().count()
        ));
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or("not hexadecimal")?;
        *byte = u8::from_str_radix(pair, 16)
            .ok()
            .filter(|_| pair.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or("not hexadecimal (expected only 0-9 and a-f)")?;
    }
    Ok(Key::from_bytes(bytes))
}

/// Reads a key file; refuses one that is missing, not a regular file, accessible by group
/// or others (like ssh with private keys), or malformed. Errors name the file.
pub fn load_key(path: &Path) -> Result<Key, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("auth key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("auth key file {shown}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "auth key file {shown}: permissions {mode:04o} are too open (group or others \
             have access); it must be readable by its owner only: chmod 600 {shown}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("auth key file {shown}: {e}"))?;
    parse_key(&text).map_err(|e| format!("auth key file {shown}: {e}"))
}

/// 16 bytes from the kernel's random number generator.
fn random_key_bytes() -> std::io::Result<[u8; 16]> {
    let mut key = [0u8; 16];
    let mut filled = 0;
    while filled < key.len() {
        // SAFETY: writes at most the remaining bytes of `key`.
        let n =
            unsafe { libc::getrandom(key[filled..].as_mut_ptr().cast(), key.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(key)
}

/// A fresh random key as key file text (32 hex characters and a newline).
pub fn generate() -> std::io::Result<String> {
    let bytes = random_key_bytes()?;
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    Ok(text)
}

/// `vipd keygen [PATH]`: writes a fresh key to `path` with mode 0600 (never over an
/// existing file), or prints it with no path.
pub fn keygen(path: Option<&Path>) -> anyhow::Result<()> {
    let text = generate().map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let Some(path) = path else {
        print!("{text}");
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("{} exists; refusing to overwrite it", path.display())
            } else {
                anyhow::anyhow!("creating {}: {e}", path.display())
            }
        })?;
    // The umask may only have narrowed 0600; make sure of it anyway.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    eprintln!(
        "vipd: wrote a new heartbeat key to {}; copy it (mode 0600) to every node of the cluster",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vipd-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn parses_hex_with_whitespace() {
        let k = parse_key("  000102030405060708090a0B0c0d0e0f\n").unwrap();
        assert_eq!(k, Key::from_bytes(core::array::from_fn(|i| i as u8)));
    }

    #[test]
    fn bad_hex_and_wrong_lengths_are_refused() {
        let e = parse_key("000102030405060708090a0b0c0d0e0g").unwrap_err();
        assert!(e.contains("hexadecimal"), "{e}");
        assert!(!e.contains("0e0g"), "never quote the key: {e}");
        let e = parse_key("000102030405060708090a0b0c0d0e").unwrap_err();
        assert!(e.contains("found 30 characters"), "{e}");
        assert!(parse_key("000102030405060708090a0b0c0d0e0f00").is_err());
        assert!(parse_key("").is_err());
        assert!(parse_key("+0102030405060708090a0b0c0d0e0f").is_err());
        assert!(parse_key("00010203 405060708090a0b0c0d0e0f").is_err());
        // Multi-byte characters of the right byte length.
        assert!(parse_key("ééééééééééééééé00").is_err());
    }

    #[test]
    fn open_missing_or_malformed_files_are_refused_with_their_name() {
        let dir = temp_dir("load");
        let path = dir.join("auth.key");
        let key = "00112233445566778899aabbccddeeff\n";

        write(&path, key, 0o644);
        let e = load_key(&path).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        write(&path, key, 0o640);
        assert!(load_key(&path).is_err());
        write(&path, key, 0o604);
        assert!(load_key(&path).is_err());

        write(&path, key, 0o600);
        assert_eq!(load_key(&path).unwrap(), parse_key(key).unwrap());
        write(&path, key, 0o400);
        assert!(load_key(&path).is_ok());

        write(&path, "not a key", 0o600);
        let e = load_key(&path).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(!e.contains("not a key"), "never quote the file: {e}");

        let missing = dir.join("missing.key");
        let e = load_key(&missing).unwrap_err();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(load_key(&dir).unwrap_err().contains("not a regular file"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keygen_writes_a_private_loadable_key_and_never_overwrites() {
        let dir = temp_dir("keygen");
        let path = dir.join("auth.key");
        keygen(Some(&path)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = load_key(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = keygen(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("refusing to overwrite"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(load_key(&path).unwrap(), key);
        // Fresh keys differ.
        assert_ne!(generate().unwrap(), generate().unwrap());
        assert_eq!(generate().unwrap().trim().len(), 32);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
