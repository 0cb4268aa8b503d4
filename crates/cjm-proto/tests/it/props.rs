//! Property checks with a small deterministic generator: random values round-trip,
//! and random or mutated frames never make the decoder panic.

use cjm_proto::{
    Array, Buffer, Call, HEADER_LEN, Hello, LogRecord, Message, ProtoError, SegmentId, Value,
    decode_frame_bytes, tag,
};

use crate::support::{canonical, encoded_frame};

/// xorshift64*: tiny, fast and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn string(&mut self) -> String {
        const PIECES: &[&str] = &["a", "Z", "0", " ", "é", "ß", "✓", "日", "🦀", "\u{0}", "\n"];
        (0..self.below(12))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }

    fn float(&mut self) -> f64 {
        const SPECIAL: &[f64] = &[
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-310,
        ];
        if self.chance(3) {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            f64::from_bits(self.next())
        }
    }

    fn big_int(&mut self) -> String {
        let digits: String = (0..=self.below(40))
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect();
        if self.chance(2) {
            format!("-{digits}")
        } else {
            digits
        }
    }

    fn value(&mut self, depth: usize) -> Value {
        let leaf = depth == 0 || self.chance(3);
        match self.below(if leaf { 8 } else { 10 }) {
            0 => Value::None,
            1 => Value::Bool(self.chance(2)),
            2 => Value::Int(self.next() as i64),
            3 => Value::BigInt(self.big_int()),
            4 => Value::Float(self.float()),
            5 => Value::Str(self.string()),
            6 => Value::Bytes(Buffer::from(self.bytes(40))),
            7 => Value::Array(Array {
                dtype: self.string(),
                shape: (0..self.below(4)).map(|_| self.next() % 5).collect(),
                data: Buffer::from(self.bytes(32)),
            }),
            8 => Value::List((0..self.below(5)).map(|_| self.value(depth - 1)).collect()),
            _ => Value::Map(
                (0..self.below(5))
                    .map(|_| (self.string(), self.value(depth - 1)))
                    .collect(),
            ),
        }
    }

    fn message(&mut self) -> Message {
        match self.below(9) {
            0 => Message::Hello(Hello {
                protocol: self.string(),
                runtime: self.string(),
                pid: self.next() as u32,
                python: self.string(),
            }),
            1 => Message::Call(Call {
                method: self.string(),
                args: (0..self.below(4)).map(|_| self.value(3)).collect(),
                kwargs: (0..self.below(4))
                    .map(|_| (self.string(), self.value(3)))
                    .collect(),
            }),
            2 => Message::Result(self.value(4)),
            3 => Message::Progress {
                progress: self.float(),
                message: self.string(),
            },
            4 => Message::Log(LogRecord {
                level: self.next() as i64,
                logger: self.string(),
                message: self.string(),
            }),
            5 => Message::Release {
                segment: SegmentId(self.next()),
                receipts: self.next() as u32,
            },
            6 => Message::CancelAck {
                phase: self.string(),
            },
            7 => Message::Stats(self.value(2)),
            _ => Message::Ping,
        }
    }

    /// Changes `frame` in one of a few ways a broken or hostile peer might.
    fn mutate(&mut self, frame: &mut Vec<u8>) {
        const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, tag::LIST, tag::MAP, tag::SHM_BYTES];
        match self.below(7) {
            0 if !frame.is_empty() => {
                let i = self.below(frame.len());
                frame[i] ^= 1 << self.below(8);
            }
            1 if !frame.is_empty() => {
                let i = self.below(frame.len());
                frame[i] = INTERESTING[self.below(INTERESTING.len())];
            }
            2 => {
                let len = self.below(frame.len() + 1);
                frame.truncate(len);
            }
            3 => {
                let i = self.below(frame.len() + 1);
                frame.splice(i..i, self.bytes(6));
            }
            4 if !frame.is_empty() => {
                let i = self.below(frame.len());
                let n = self.below(frame.len() - i + 1);
                frame.drain(i..i + n);
            }
            5 if frame.len() >= 4 => {
                // Overwrite what may be a length or count with a large one.
                let i = self.below(frame.len() - 3);
                let n = [u32::MAX, 1 << 20, 0x7fff_ffff][self.below(3)];
                frame[i..i + 4].copy_from_slice(&n.to_le_bytes());
            }
            _ => {
                let i = self.below(frame.len() + 1);
                let j = self.below(frame.len() + 1);
                let (i, j) = (i.min(j), i.max(j));
                frame[i..j].reverse();
            }
        }
    }
}

/// Decodes `frame` (which must not panic); whatever is accepted must re-encode to a
/// frame that decodes to the same message.
fn decode_stably(frame: &[u8]) -> bool {
    match decode_frame_bytes(frame) {
        Ok((header, msg)) => {
            let again = encoded_frame(&msg, header.id);
            let (_, msg2) = decode_frame_bytes(&again).expect("a re-encoded message decodes");
            assert_eq!(canonical(&msg2), canonical(&msg));
            true
        }
        Err(ProtoError::Malformed { .. }) => false,
        Err(other) => panic!("not a malformed-frame error: {other:?}"),
    }
}

#[test]
fn random_values_round_trip() {
    let mut rng = Rng::new(0x5eed_0001);
    for _ in 0..2_000 {
        let v = rng.value(5);
        let (got, _) = crate::values::round_trip(&v);
        assert_eq!(format!("{got:?}"), format!("{v:?}"));
    }
}

#[test]
fn random_messages_round_trip_as_frames() {
    let mut rng = Rng::new(0x5eed_0002);
    for i in 0..2_000 {
        let msg = rng.message();
        let frame = encoded_frame(&msg, rng.next());
        let (_, got) = decode_frame_bytes(&frame).unwrap_or_else(|e| panic!("#{i} {msg:?}: {e}"));
        assert_eq!(canonical(&got), canonical(&msg), "#{i}");
    }
}

#[test]
fn random_bytes_never_make_the_decoder_panic() {
    let mut rng = Rng::new(0x5eed_0003);
    for _ in 0..20_000 {
        decode_stably(&rng.bytes(64));
    }
    // A valid header in front lets the body decoders see the random bytes.
    for _ in 0..20_000 {
        let mut frame = vec![0; HEADER_LEN];
        frame[0] = 1 + rng.below(20) as u8;
        frame.extend(rng.bytes(48));
        decode_stably(&frame);
    }
}

#[test]
fn mutated_frames_never_make_the_decoder_panic() {
    let mut rng = Rng::new(0x5eed_0004);
    let mut accepted = 0;
    let rounds = 20_000;
    for _ in 0..rounds {
        let mut frame = encoded_frame(&rng.message(), rng.next());
        for _ in 0..=rng.below(3) {
            rng.mutate(&mut frame);
        }
        accepted += usize::from(decode_stably(&frame));
    }
    // Sanity: the mutations are neither all harmless nor all fatal.
    assert!(
        accepted > 0 && accepted < rounds,
        "{accepted} of {rounds} accepted"
    );
}
