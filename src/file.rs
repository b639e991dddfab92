//! Reading a local file that must be small (azure.json, a cloud environment file, a PFX):
//! never more than its bound is read, even when the file is larger or grows meanwhile, and
//! the bytes are cleared on drop (some of these files hold secrets).

use std::io::Read as _;

use zeroize::Zeroizing;

/// The whole of `file` if it holds at most `max` bytes; `None` if it holds more.
pub(crate) fn read_at_most(
    file: std::fs::File,
    max: u64,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        return Ok(None);
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_bound_and_refuses_a_byte_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let open = || std::fs::File::open(&path).unwrap();
        assert_eq!(
            read_at_most(open(), 10).unwrap().unwrap().as_slice(),
            b"0123456789"
        );
        assert!(read_at_most(open(), 9).unwrap().is_none());
        assert_eq!(read_at_most(open(), u64::MAX).unwrap().unwrap().len(), 10);
    }
}
