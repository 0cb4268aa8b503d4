//! Feeds arbitrary bytes to the frame decoder: it must return an error or a message,
//! never panic, overflow its stack or allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, msg)) = cjm_proto::decode_frame_bytes(data) {
        // Whatever decodes must encode again and decode to the same message.
        let body = msg
            .encode(cjm_proto::Side::Host)
            .expect("a decoded message encodes");
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(&body.buf);
        let (_, again) =
            cjm_proto::decode_frame_bytes(&frame).expect("a re-encoded message decodes");
        let canonical =
            |m: &cjm_proto::Message| m.encode(cjm_proto::Side::Host).map(|w| w.buf).ok();
        assert_eq!(canonical(&again), canonical(&msg));
    }
});
