//! node_exporter's textfile collector reads every `*.prom` file of one directory at each scrape.
//! The file is replaced whole (a temporary file in the same directory, then rename(2)), so a
//! scrape never reads half a pass; it is made readable by all (0644) whatever the umask, since
//! node_exporter runs as another user.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use crate::config::TextfileSettings;

#[derive(Debug, thiserror::Error)]
#[error("write of {path}: {reason}")]
pub struct WriteError {
    path: String,
    reason: String,
}

/// Replaces `dir/name` with `text`; the path written on success.
pub fn write(settings: &TextfileSettings, text: &str) -> Result<PathBuf, WriteError> {
    let path = settings.dir.join(&settings.name);
    // Not `*.prom`, so node_exporter never reads it; the pid keeps two processes apart.
    let temp = settings
        .dir
        .join(format!(".{}.{}.tmp", settings.name, std::process::id()));
    let fail = |e: std::io::Error| WriteError {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        // The mode above is masked by the umask (the systemd unit sets 0077).
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(fail(e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> TextfileSettings {
        TextfileSettings {
            dir: dir.to_owned(),
            name: "amg_token_rotator.prom".into(),
        }
    }

    #[test]
    fn the_file_is_replaced_whole_readable_by_all_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let path = write(&s, "a 1\n").unwrap();
        write(&s, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["amg_token_rotator.prom"]);
    }

    #[test]
    fn a_directory_that_is_missing_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(&settings(&dir.path().join("nope")), "a 1\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("nope/amg_token_rotator.prom"), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }
}
