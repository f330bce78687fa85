//! A container's stdout and stderr: the runtime writes them to two files in the container's
//! directory (files, not pipes, so the container outlives the agent without losing its output
//! or dying of SIGPIPE); a follower copies what is new into the agent's log store.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::runtime::{ContainerOutput, OutputStream};

/// How often the files are checked for new output.
const POLL: Duration = Duration::from_millis(50);

/// The output files of the container in `dir`.
pub fn files(dir: &Path) -> [(OutputStream, PathBuf); 2] {
    [
        (OutputStream::Stdout, dir.join("stdout")),
        (OutputStream::Stderr, dir.join("stderr")),
    ]
}

/// Opens (creating) the output files for the runtime to write to.
pub fn open_for_container(dir: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    };
    let [(_, out), (_, err)] = files(dir);
    Ok((open(&out)?, open(&err)?))
}

/// Copies new output from the files into `output` from their beginning, until `stop`, then
/// once more to the end.
pub async fn follow(dir: PathBuf, output: Arc<dyn ContainerOutput>, stop: CancellationToken) {
    let mut offsets = [0u64; 2];
    loop {
        let stopping = stop.is_cancelled();
        for (i, (stream, path)) in files(&dir).into_iter().enumerate() {
            offsets[i] = copy_new(&path, offsets[i], stream, output.as_ref());
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Copies what `path` holds past `offset`; returns the new offset.
fn copy_new(path: &Path, offset: u64, stream: OutputStream, output: &dyn ContainerOutput) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return offset;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => return at,
            Ok(n) => {
                output.write(stream, &buf[..n]);
                at += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(OutputStream, Vec<u8>)>>);
    impl ContainerOutput for Collect {
        fn write(&self, stream: OutputStream, bytes: &[u8]) {
            self.0.lock().unwrap().push((stream, bytes.to_vec()));
        }
    }

    #[tokio::test]
    async fn new_output_is_copied_once_and_drained_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut out, mut err) = open_for_container(tmp.path()).unwrap();
        use std::io::Write;
        out.write_all(b"one\n").unwrap();
        let sink = Arc::new(Collect::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(tmp.path().into(), sink.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(120)).await;
        out.write_all(b"two\n").unwrap();
        err.write_all(b"oops\n").unwrap();
        stop.cancel();
        task.await.unwrap();
        let got = sink.0.lock().unwrap().clone();
        let stdout: Vec<u8> = got
            .iter()
            .filter(|(s, _)| *s == OutputStream::Stdout)
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(stdout, b"one\ntwo\n");
        assert!(got.contains(&(OutputStream::Stderr, b"oops\n".to_vec())));
    }
}
