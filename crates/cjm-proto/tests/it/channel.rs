//! The channel itself: end of stream, shutdown, a vanished peer, concurrent senders.

use std::sync::{Arc, mpsc};
use std::time::Instant;

use cjm_proto::{Kind, Message, NoSegments, ProtoError, Side, Value};

use crate::support::{PATIENCE, pair, recv_msg, send, wait};

#[test]
fn dropping_the_worker_end_makes_recv_on_the_host_end_return_none() {
    let (host, worker) = pair();
    send(&worker, Side::Worker, 1, &Message::Pong);
    drop(worker);
    // What was sent before the close still arrives, then the end.
    assert_eq!(recv_msg(&host, &NoSegments).1, Message::Pong);
    assert!(host.recv().unwrap().is_none());
    assert!(host.recv().unwrap().is_none(), "end of stream is sticky");
}

#[test]
fn dropping_the_host_end_makes_recv_on_the_worker_end_return_none() {
    let (host, worker) = pair();
    drop(host);
    assert!(worker.recv().unwrap().is_none());
}

#[test]
fn sending_to_a_closed_peer_fails_instead_of_raising_sigpipe() {
    let (host, worker) = pair();
    drop(worker);
    let err = host.send_empty(Kind::Ping, 1).unwrap_err();
    assert!(
        matches!(err, ProtoError::Io { op: "sendmsg", .. }),
        "{err:?}"
    );
}

/// Whether thread `tid` of this process is asleep in the kernel.
fn sleeping(tid: i32) -> bool {
    // The state letter follows the parenthesised command name.
    crate::support::try_read_proc(&format!("/proc/self/task/{tid}/stat"))
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('S'))
        })
        .unwrap_or(false)
}

#[test]
fn shutdown_wakes_a_thread_blocked_in_recv() {
    let (host, _worker) = pair();
    let host = Arc::new(host);
    let (tid_tx, tid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let reader = Arc::clone(&host);
    std::thread::spawn(move || {
        tid_tx
            .send(rustix::thread::gettid().as_raw_nonzero().get())
            .unwrap();
        let _ = done_tx.send(reader.recv().map(|f| f.is_none()));
    });
    let tid = wait(&tid_rx, "the reader's thread id");
    // Wait until the reader sleeps (in recvmsg: it does nothing else that blocks), so
    // shutdown has to wake it. Were it asleep elsewhere, shutdown is sticky and the
    // test still passes, only proving less.
    let deadline = Instant::now() + PATIENCE;
    while !sleeping(tid) {
        assert!(Instant::now() < deadline, "the reader never blocked");
        std::thread::yield_now();
    }
    assert!(done_rx.try_recv().is_err(), "recv returned before shutdown");
    host.shutdown();
    let eof = wait(&done_rx, "recv after shutdown").expect("recv");
    assert!(eof, "recv after shutdown should report end of stream");
}

#[test]
fn concurrent_senders_on_one_channel_never_interleave_frames() {
    const THREADS: u64 = 4;
    const FRAMES: u64 = 50;
    let (host, worker) = pair();
    let worker = Arc::new(worker);
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let worker = Arc::clone(&worker);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0..FRAMES {
                // Sizes up to the inline limit, so frames are big enough to collide.
                let len = ((t * 7919 + i * 104_729) % 60_000) as usize;
                let s = char::from(b'a' + t as u8).to_string().repeat(len);
                send(
                    &worker,
                    Side::Worker,
                    t << 32 | i,
                    &Message::Chunk(Value::Str(s)),
                );
            }
            let _ = tx.send(());
        });
    }
    // Only the senders hold the worker end now: should they all die, recv sees the end.
    drop((tx, worker));
    let mut next = [0u64; THREADS as usize];
    for _ in 0..THREADS * FRAMES {
        let (header, msg) = recv_msg(&host, &NoSegments);
        let (t, i) = (header.id >> 32, header.id & 0xffff_ffff);
        assert_eq!(i, next[t as usize], "frames of one sender arrive in order");
        next[t as usize] += 1;
        let Message::Chunk(Value::Str(s)) = msg else {
            panic!("not a chunk")
        };
        let want = char::from(b'a' + t as u8);
        assert!(s.chars().all(|c| c == want), "a frame mixes two senders");
    }
    for _ in 0..THREADS {
        wait(&rx, "a sender to finish");
    }
}
