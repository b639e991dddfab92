//! The `:authority` rewriting layer on arbitrary client and server byte streams.
//! The first byte splits the input: client bytes (after the preface) and server bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (server, client) = rest.split_at(at);
    let mut layer = akv_bridge::fuzzing::AuthorityRewrite::new(tokio::io::empty(), true);
    layer.feed_server(server);
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(client);
    // Feed in two pieces to exercise partial frames.
    let (a, b) = input.split_at(input.len() / 2);
    if layer.feed(a).is_ok() {
        let _ = layer.feed(b);
    }
});
