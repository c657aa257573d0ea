//! The control socket's request parsing (`control::protocol::parse_request`): any line gives
//! a request or a reason, never a panic; an accepted request carries this init's version and
//! survives a round trip through its wire form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nix2gpu_init::control::protocol::{self, Envelope, VERSION};

fuzz_target!(|line: &[u8]| {
    match protocol::parse_request(line) {
        Ok(envelope) => {
            assert_eq!(envelope.v, VERSION);
            let wire = serde_json::to_vec(&envelope).expect("a request serializes");
            let again: Envelope = protocol::parse_request(&wire).expect("its own wire form parses");
            assert_eq!(again, envelope);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
