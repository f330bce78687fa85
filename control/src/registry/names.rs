//! The distribution spec's grammar for repository names and tags.
//!
//! Validating both before they touch the file system is what keeps `..`, absolute paths and the
//! storage's own `_manifests` directories out of reach of a client.

use super::RegistryError;

/// The longest repository name accepted (the spec's recommended limit).
const MAX_NAME_LEN: usize = 255;

/// Checks `name` against `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.split('/').all(component_is_valid) {
        return Err(RegistryError::NameInvalid(name.to_string()));
    }
    Ok(())
}

fn component_is_valid(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        let sep = bytes[i];
        while i < bytes.len() && bytes[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Checks `tag` against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), RegistryError> {
    let bytes = tag.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let rest_ok = bytes[1.min(bytes.len())..]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !first_ok || !rest_ok || bytes.len() > 128 {
        return Err(RegistryError::TagInvalid(tag.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for good in ["a", "library/busybox", "a.b/c__d/e---f", "x1/y2/z3"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "..",
            "a/../b",
            "_manifests",
            "a/_x",
            "a..b",
            "a___b",
            "a-",
            "a b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d"] {
            assert!(validate_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
