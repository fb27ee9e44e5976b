//! Several producer threads push variable-size messages; one consumer
//! drains them in batches and checks them; prints entries/s and MB/s.
//!
//! ```text
//! cargo run --release --example throughput -- [producers] [messages per producer] [capacity]
//! cargo run --release --example throughput -- --help
//! ```
//!
//! Exits with status 2 on a bad argument, before anything runs.

use std::thread;
use std::time::Instant;

use mpring::{ReserveError, Ring};

const HELP: &str = "\
Producers -> mpring -> one consumer: entries/s and MB/s.

USAGE: cargo run --release --example throughput -- [PRODUCERS] [MESSAGES] [CAPACITY]

  PRODUCERS   producer threads, 1 to 255 (default 2)
  MESSAGES    messages per producer, at least 1 (default 2000000)
  CAPACITY    ring bytes, a power of two of at least 4096, so that the
              largest message (1,500 bytes) fits (default 1048576)

Exits with status 2 on a bad argument.";

/// The largest message: a producer reserves up to this.
const LARGEST: usize = 1500;

/// The checked arguments, `Ok(None)` for `--help`, or the message to
/// refuse the command line with.
fn parse_args(args: &[String]) -> Result<Option<[usize; 3]>, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(None);
    }
    let mut values = [2, 2_000_000, 1 << 20];
    if let Some(flag) = args.iter().find(|a| a.starts_with('-')) {
        return Err(format!("unknown option {flag} (see --help)"));
    }
    if args.len() > values.len() {
        return Err(format!(
            "too many arguments: {} (at most 3, see --help)",
            args.len()
        ));
    }
    let names = ["PRODUCERS", "MESSAGES", "CAPACITY"];
    for ((slot, arg), name) in values.iter_mut().zip(args).zip(names) {
        *slot = arg
            .parse()
            .map_err(|_| format!("{name}: not a whole number: {arg}"))?;
    }
    let [producers, messages, capacity] = values;
    if !(1..=255).contains(&producers) {
        // The producer id travels in one byte of each message.
        return Err(format!("PRODUCERS: {producers} (1 to 255)"));
    }
    if messages == 0 {
        return Err("MESSAGES: at least 1".to_string());
    }
    match Ring::new(capacity) {
        Err(e) => return Err(format!("CAPACITY: {e}")),
        Ok((producer, _)) if producer.max_payload() < LARGEST => {
            return Err(format!(
                "CAPACITY: a ring of {capacity} bytes takes entries up to {} bytes, \
                 below the largest message ({LARGEST} bytes): use 4096 or more",
                producer.max_payload()
            ))
        }
        Ok(_) => {}
    }
    Ok(Some(values))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [producers, messages, capacity] = match parse_args(&args) {
        Ok(Some(values)) => values,
        Ok(None) => {
            println!("{HELP}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("throughput: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (producer, mut consumer) = Ring::new(capacity).expect("checked by parse_args");
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} threads ({producers} producers, 1 consumer) on {cores} cores",
        producers + 1
    );
    println!(
        "{producers} producers x {messages} messages of 20..=1500 bytes, ring of {capacity} bytes"
    );
    // Every message carries a slice of this pattern, copied in by the
    // producer (as a datagram would be) and compared by the consumer.
    let pattern: &'static [u8] = (0..LARGEST as u32)
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
                    let len = 20 + (x % (LARGEST as u32 - 19)) as usize;
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
        "{entries} entries in {elapsed:.3} s: {:.2} M entries/s, {:.0} MB/s; producers found \
         the ring full {full} times and retried (the consumer was behind)",
        entries as f64 / elapsed / 1e6,
        bytes as f64 / elapsed / 1e6,
    );
    std::process::ExitCode::SUCCESS
}
