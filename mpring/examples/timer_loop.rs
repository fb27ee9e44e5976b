//! A datagram handler's loop: wait for datagrams *or* the next timer
//! (QUIC loss detection, idle timeouts), whichever comes first, and shut
//! down on request. Listener threads push bursts with pauses in between.
//!
//! ```text
//! cargo run --release --example timer_loop
//! cargo run --release --example timer_loop -- --help
//! ```
//!
//! It takes no arguments; exits with status 2 if given any but `--help`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mpring::{Ring, WaitError};

const HELP: &str = "\
A handler loop: wait for datagrams or the next 25 ms timer tick, whichever
comes first; two listener threads push bursts of 1,200-byte datagrams
with pauses; a shutdown is requested after 400 ms. Prints how many
datagrams, batches and timer ticks the loop saw.

USAGE: cargo run --release --example timer_loop

No arguments (-h, --help: this text). Exits with status 2 on any other.";

fn main() -> std::process::ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--help" || arg == "-h" {
            println!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        eprintln!("timer_loop: unexpected argument {arg} (it takes none; see --help)");
        return std::process::ExitCode::from(2);
    }
    let (producer, mut consumer) = Ring::new(1 << 20).expect("a power of two");
    let waker = consumer.wake_handle();
    let shutdown = Arc::new(AtomicBool::new(false));

    // Two listeners: bursts of 1,200-byte datagrams, then silence.
    let listeners: Vec<_> = (0..2u8)
        .map(|id| {
            let producer = producer.clone();
            thread::spawn(move || {
                let datagram = [id; 1200];
                for _burst in 0..30 {
                    for _ in 0..500 {
                        if producer.push(&datagram).is_err() {
                            // Full: a UDP listener drops and counts.
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    drop(producer);

    // Stop the handler after 400 ms, whatever it is doing.
    let stop = shutdown.clone();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(400));
        stop.store(true, Ordering::Relaxed);
        waker.wake();
    });

    let tick = Duration::from_millis(25);
    let mut next_timer = Instant::now() + tick;
    let (mut datagrams, mut timers, mut batches) = (0u64, 0u64, 0u64);
    loop {
        match consumer.read_batch_deadline(64, next_timer, |datagram| {
            datagrams += 1;
            assert_eq!(datagram.len(), 1200);
        }) {
            Ok(_) if shutdown.load(Ordering::Relaxed) => {
                // Woken on purpose (or just fed): stop.
                println!("shutdown requested");
                break;
            }
            Ok(_) => {
                batches += 1;
                // Under steady load the deadline can pass between batches.
                while Instant::now() >= next_timer {
                    timers += 1;
                    next_timer += tick;
                }
            }
            Err(WaitError::Timeout) => {
                // A timer fired: run loss detection, send probes...
                timers += 1;
                next_timer += tick;
            }
            Err(WaitError::Disconnected) => {
                println!("all listeners gone");
                break;
            }
        }
    }
    println!(
        "{datagrams} datagrams in {batches} batches; {timers} timer ticks of 25 ms ran between \
         the batches"
    );
    stopper.join().unwrap();
    for l in listeners {
        l.join().unwrap();
    }
    std::process::ExitCode::SUCCESS
}
