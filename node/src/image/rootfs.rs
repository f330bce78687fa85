//! Finding the `.wasm` an ordinary OCI image's entrypoint names, inside its layers.
//!
//! Layers are read top-down with the overlay rules of the image spec: the first layer that holds
//! the path wins, a whiteout (`.wh.<name>`) or an opaque directory marker (`.wh..wh..opq`) hides
//! the layers below it, and symbolic and hard links are followed (a few hops at most).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// How many links are followed before giving up (a loop, or a deliberately long chain).
const MAX_LINK_HOPS: usize = 8;

/// The absolute path of the `.wasm` an image config's entrypoint (or, without one, command)
/// names, resolved against its working directory; `None` when it names no `.wasm`.
pub fn entrypoint_wasm(config: &serde_json::Value) -> Option<String> {
    let section = config.get("config")?;
    let first = |key: &str| {
        section
            .get(key)?
            .as_array()?
            .first()?
            .as_str()
            .map(str::to_string)
    };
    let program = first("Entrypoint").or_else(|| first("Cmd"))?;
    if !program.ends_with(".wasm") {
        return None;
    }
    if program.starts_with('/') {
        return Some(normalize(&program));
    }
    let workdir = section
        .get("WorkingDir")
        .and_then(|w| w.as_str())
        .unwrap_or("/");
    Some(normalize(&format!("{workdir}/{program}")))
}

/// Whether an image config says the image is for a Wasm platform.
pub fn is_wasm_platform(config: &serde_json::Value) -> bool {
    let field = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    field("architecture") == "wasm" || field("os").starts_with("wasi")
}

/// One layer on disk.
#[derive(Clone, Debug)]
pub struct LayerFile {
    /// The blob's path.
    pub path: PathBuf,
    /// Its media type (tells the compression).
    pub media_type: String,
}

/// Reads the file at absolute `path` from the stacked layers (last = top), or `None`.
pub fn read_file(layers: &[LayerFile], path: &str) -> io::Result<Option<Vec<u8>>> {
    let mut target = normalize(path);
    for _ in 0..MAX_LINK_HOPS {
        match lookup(layers, &target)? {
            Lookup::File(content) => return Ok(Some(content)),
            Lookup::Missing => return Ok(None),
            Lookup::Link(to) => target = to,
        }
    }
    Err(io::Error::other(format!(
        "{path}: more than {MAX_LINK_HOPS} links to follow"
    )))
}

enum Lookup {
    File(Vec<u8>),
    Link(String),
    Missing,
}

fn lookup(layers: &[LayerFile], target: &str) -> io::Result<Lookup> {
    for layer in layers.iter().rev() {
        let mut archive = tar::Archive::new(open_layer(layer)?);
        let mut hidden_below = false;
        for entry in archive.entries()? {
            let mut entry = entry?;
            let entry_path = normalize(&entry.path()?.to_string_lossy());
            if entry_path == target {
                let kind = entry.header().entry_type();
                if kind.is_file() {
                    let mut content = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut content)?;
                    return Ok(Lookup::File(content));
                }
                if kind.is_symlink() || kind.is_hard_link() {
                    let to = entry
                        .link_name()?
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let resolved = if to.starts_with('/') || kind.is_hard_link() {
                        normalize(&format!("/{to}"))
                    } else {
                        let parent = Path::new(target)
                            .parent()
                            .map_or("/".to_string(), |p| p.to_string_lossy().into_owned());
                        normalize(&format!("{parent}/{to}"))
                    };
                    return Ok(Lookup::Link(resolved));
                }
                return Ok(Lookup::Missing);
            }
            let (dir, name) = split(&entry_path);
            if name == ".wh..wh..opq" && is_ancestor(dir, target) {
                hidden_below = true;
            } else if let Some(deleted) = name.strip_prefix(".wh.") {
                let deleted = normalize(&format!("{dir}/{deleted}"));
                if deleted == target || is_ancestor(&deleted, target) {
                    return Ok(Lookup::Missing);
                }
            }
        }
        if hidden_below {
            return Ok(Lookup::Missing);
        }
    }
    Ok(Lookup::Missing)
}

fn open_layer(layer: &LayerFile) -> io::Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(&layer.path)?;
    if layer.media_type.ends_with("zstd") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd-compressed layers cannot be searched for a .wasm entrypoint",
        ));
    }
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// `/a/./b//c/../d` → `/a/b/d`; `app.wasm` → `/app.wasm`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}

fn is_ancestor(dir: &str, path: &str) -> bool {
    dir == "/" || path.starts_with(&format!("{dir}/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Builds a tar layer from (path, kind) entries, gzipped when asked.
    fn layer(dir: &Path, name: &str, entries: &[(&str, Entry)], gzip: bool) -> LayerFile {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            match entry {
                Entry::File(content) => {
                    header.set_size(content.len() as u64);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder.append_data(&mut header, path, *content).unwrap();
                }
                Entry::Symlink(to) => {
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Symlink);
                    builder.append_link(&mut header, path, to).unwrap();
                }
            }
        }
        let bytes = builder.into_inner().unwrap();
        let path = dir.join(name);
        if gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, &bytes).unwrap();
            std::fs::write(&path, encoder.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        LayerFile {
            path,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }

    enum Entry {
        File(&'static [u8]),
        Symlink(&'static str),
    }

    #[test]
    fn entrypoint_names_the_wasm_relative_to_the_working_dir() {
        let cases = [
            (
                json!({"config": {"Entrypoint": ["/app.wasm"]}}),
                Some("/app.wasm"),
            ),
            (
                json!({"config": {"Cmd": ["bin/x.wasm"], "WorkingDir": "/opt"}}),
                Some("/opt/bin/x.wasm"),
            ),
            (
                json!({"config": {"Entrypoint": ["/bin/sh"], "Cmd": ["a.wasm"]}}),
                None,
            ),
            (json!({"config": {}}), None),
            (json!({}), None),
        ];
        for (config, want) in cases {
            assert_eq!(entrypoint_wasm(&config).as_deref(), want, "{config}");
        }
    }

    #[test]
    fn the_top_layer_wins_and_whiteouts_hide_lower_layers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let base = layer(
            d,
            "base",
            &[
                ("app.wasm", Entry::File(b"old")),
                ("lib/a.wasm", Entry::File(b"a")),
            ],
            true,
        );
        let top = layer(
            d,
            "top",
            &[
                ("app.wasm", Entry::File(b"new")),
                ("lib/.wh.a.wasm", Entry::File(b"")),
            ],
            false,
        );
        let layers = vec![base.clone(), top];
        assert_eq!(
            read_file(&layers, "/app.wasm").unwrap().as_deref(),
            Some(&b"new"[..])
        );
        assert_eq!(read_file(&layers, "/lib/a.wasm").unwrap(), None);
        assert_eq!(
            read_file(std::slice::from_ref(&base), "/lib/a.wasm")
                .unwrap()
                .as_deref(),
            Some(&b"a"[..])
        );
        let opaque = layer(d, "opq", &[("lib/.wh..wh..opq", Entry::File(b""))], false);
        assert_eq!(read_file(&[base, opaque], "/lib/a.wasm").unwrap(), None);
    }

    #[test]
    fn symlinks_are_followed_and_loops_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let l = layer(
            d,
            "l",
            &[
                ("real/app.wasm", Entry::File(b"wasm")),
                ("app.wasm", Entry::Symlink("real/app.wasm")),
                ("loop.wasm", Entry::Symlink("/loop.wasm")),
            ],
            true,
        );
        assert_eq!(
            read_file(std::slice::from_ref(&l), "/app.wasm")
                .unwrap()
                .as_deref(),
            Some(&b"wasm"[..])
        );
        assert!(read_file(&[l], "/loop.wasm").is_err());
    }
}
