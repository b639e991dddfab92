//! The KMS Decrypt request parsers: ciphertext, key id and annotations.

#![no_main]

use std::collections::HashMap;

use akv_bridge::fuzzing::kms_envelope as envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = envelope::check_ciphertext_len(data);
    let _ = envelope::decode_ciphertext(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = envelope::check_key_id(text);
        let _ = envelope::loggable_uid(text);
    }
    // Annotations: split the input into key/value pairs on 0xff bytes.
    let mut annotations = HashMap::new();
    for pair in data.split(|b| *b == 0xff) {
        let (k, v) = pair.split_at(pair.len() / 2);
        annotations.insert(String::from_utf8_lossy(k).into_owned(), v.to_vec());
    }
    if let Ok(meta) = envelope::decrypt_meta(&annotations) {
        let _ = envelope::CacheKey::new(data, "k", meta.algorithm);
    }
});
