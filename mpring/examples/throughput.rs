//! Several producer threads push variable-size messages; one consumer
//! drains them in batches and checks them; prints entries/s and MB/s.
//!
//! ```text
//! cargo run --release --example throughput -- [producers] [messages per producer] [capacity]
//! ```

use std::thread;
use std::time::Instant;

use mpring::{ReserveError, Ring};

const HELP: &str = "\
Producers -> mpring -> one consumer: entries/s and MB/s.

USAGE: cargo run --release --example throughput -- [PRODUCERS] [MESSAGES] [CAPACITY]

  PRODUCERS   producer threads (default 2)
  MESSAGES    messages per producer (default 2000000)
  CAPACITY    ring bytes, a power of two (default 1048576)";

/// The positional numbers, or the message to print and exit with.
fn parse_args() -> Result<[usize; 3], String> {
    let mut values = [2, 2_000_000, 1 << 20];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{HELP}");
        std::process::exit(0);
    }
    if args.len() > values.len() {
        return Err(format!("too many arguments\n\n{HELP}"));
    }
    for (slot, arg) in values.iter_mut().zip(&args) {
        *slot = arg
            .parse()
            .map_err(|_| format!("not a number: {arg}\n\n{HELP}"))?;
    }
    Ok(values)
}

fn main() -> std::process::ExitCode {
    let [producers, messages, capacity] = match parse_args() {
        Ok(values) => values,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} threads ({producers} producers, 1 consumer) on {cores} cores",
        producers + 1
    );

    let (producer, mut consumer) = match Ring::new(capacity) {
        Ok(handles) => handles,
        Err(e) => {
            eprintln!("CAPACITY: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    println!(
        "{producers} producers x {messages} messages of 20..=1500 bytes, ring of {capacity} bytes"
    );
    // Every message carries a slice of this pattern, copied in by the
    // producer (as a datagram would be) and compared by the consumer.
    let pattern: &'static [u8] = (0..1500u32)
        .map(|i| (i * 7) as u8)
        .collect::<Vec<_>>()
        .leak();
    let start = Instant::now();
    let workers: Vec<_> = (0..producers)
        .map(|id| {
            let producer = producer.clone();
            thread::spawn(move || {
                let mut x = 0x9E37_79B9u32 ^ id as u32;
                let mut full = 0u64;
                for seq in 0..messages as u64 {
                    // A cheap xorshift picks the size: 20..=1500 bytes.
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let len = 20 + (x % 1481) as usize;
                    let mut entry = loop {
                        match producer.reserve(len) {
                            Ok(entry) => break entry,
                            Err(ReserveError::Full) => {
                                full += 1;
                                std::hint::spin_loop();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                    // Producer id, sequence number, then the pattern.
                    entry[0] = id as u8;
                    entry[1..9].copy_from_slice(&seq.to_le_bytes());
                    entry[9..].copy_from_slice(&pattern[..len - 9]);
                    entry.commit();
                }
                full
            })
        })
        .collect();
    drop(producer);

    let mut next = vec![0u64; producers];
    let (mut entries, mut bytes) = (0u64, 0u64);
    loop {
        let done = consumer.is_disconnected();
        let n = consumer.read_batch(256, |entry| {
            let id = entry[0] as usize;
            let seq = u64::from_le_bytes(entry[1..9].try_into().unwrap());
            assert_eq!(seq, next[id], "producer {id} out of order");
            assert!(entry[9..] == pattern[..entry.len() - 9], "corrupted entry");
            next[id] += 1;
            bytes += entry.len() as u64;
        });
        entries += n as u64;
        if n == 0 {
            if done {
                break;
            }
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let full: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(entries, (producers * messages) as u64);
    println!(
        "{entries} entries in {elapsed:.3} s: {:.2} M entries/s, {:.0} MB/s ({full} full retries)",
        entries as f64 / elapsed / 1e6,
        bytes as f64 / elapsed / 1e6,
    );
    std::process::ExitCode::SUCCESS
}
