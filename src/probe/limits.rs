//! kube-apiserver's limits on a plugin's answers (pure): key id and ciphertext sizes,
//! annotation keys (fully-qualified domain names) and their total size.

use std::collections::HashMap;

use super::printable;

/// Largest key id kube-apiserver accepts (`KeyIDMaxSize`).
pub const KEY_ID_MAX_SIZE: usize = 1024;
/// Largest Encrypt ciphertext kube-apiserver accepts (`encryptedDEKSourceMaxSize`).
pub const CIPHERTEXT_MAX_SIZE: usize = 1024;
/// Largest total size of annotation keys plus values (`annotationsMaxSize`).
pub const ANNOTATIONS_MAX_SIZE: usize = 32 * 1024;

/// Longest DNS-1123 subdomain.
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 label.
const DNS1123_LABEL_MAX: usize = 63;

/// `ValidateKeyID`: non-empty and at most [`KEY_ID_MAX_SIZE`] bytes.
pub fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        return Err("is empty".to_owned());
    }
    if key_id.len() > KEY_ID_MAX_SIZE {
        return Err(format!(
            "is {} bytes, more than the {KEY_ID_MAX_SIZE} kube-apiserver accepts",
            key_id.len()
        ));
    }
    Ok(())
}

/// `validateEncryptedDEKSource`: the Encrypt ciphertext is non-empty and at most
/// [`CIPHERTEXT_MAX_SIZE`] bytes.
pub fn validate_ciphertext(ciphertext: &[u8]) -> Result<(), String> {
    if ciphertext.is_empty() {
        return Err("the ciphertext is empty".to_owned());
    }
    if ciphertext.len() > CIPHERTEXT_MAX_SIZE {
        return Err(format!(
            "the ciphertext is {} bytes, more than the {CIPHERTEXT_MAX_SIZE} kube-apiserver accepts",
            ciphertext.len()
        ));
    }
    Ok(())
}

/// `validation.IsFullyQualifiedDomainName` (k8s.io/apimachinery), which kube-apiserver
/// applies to every annotation key: an optional trailing `.` is dropped, then the name is a
/// DNS-1123 subdomain of at most 253 characters with at least two labels, each label 1 to 63
/// lowercase alphanumerics or `-`, not starting or ending with `-`.
pub fn validate_annotation_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let name = key.strip_suffix('.').unwrap_or(key);
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "is {} characters, more than {DNS1123_SUBDOMAIN_MAX}",
            name.len()
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        let bytes = label.as_bytes();
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let alnum =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !bytes.iter().all(allowed) || !alnum(bytes.first()) || !alnum(bytes.last()) {
            return Err(
                "must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', \
                 each label starting and ending with an alphanumeric"
                    .to_owned(),
            );
        }
    }
    if labels.len() < 2 {
        return Err("must be a domain with at least two segments separated by dots".to_owned());
    }
    if let Some(label) = labels.iter().find(|l| l.len() > DNS1123_LABEL_MAX) {
        return Err(format!(
            "has a label of {} characters, more than {DNS1123_LABEL_MAX}",
            label.len()
        ));
    }
    Ok(())
}

/// Total size of the annotation keys plus values, as kube-apiserver counts it.
pub fn annotations_size(annotations: &HashMap<String, Vec<u8>>) -> usize {
    annotations.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// `validateAnnotations`: every key valid ([`validate_annotation_key`]) and keys plus values
/// at most [`ANNOTATIONS_MAX_SIZE`] bytes. Returns one sentence per problem, keys sorted.
pub fn validate_annotations(annotations: &HashMap<String, Vec<u8>>) -> Vec<String> {
    let mut keys: Vec<&String> = annotations.keys().collect();
    keys.sort();
    let mut problems: Vec<String> = keys
        .into_iter()
        .filter_map(|key| {
            validate_annotation_key(key)
                .err()
                .map(|e| format!("annotation key {:?} {e}", printable(key, 256)))
        })
        .collect();
    let total = annotations_size(annotations);
    if total > ANNOTATIONS_MAX_SIZE {
        problems.push(format!(
            "annotations total {total} bytes (keys + values), more than the \
             {ANNOTATIONS_MAX_SIZE} kube-apiserver accepts"
        ));
    }
    problems
}

#[cfg(test)]
mod tests;
