//! Per-entry metadata: a typed record stored with every entry, outside its
//! payload, given at commit and read with the entry.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::thread;

use mpring::{Alignment, BuildError, ReserveError, Ring};

/// What a UDP listener might keep with a datagram. Its fields leave
/// padding bytes inside the struct (the enum tag of `SocketAddr`, `bool`,
/// `u16` before `u64`): they are copied as a value, never read as bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Received {
    from: SocketAddr,
    to: SocketAddr,
    ecn: u8,
    truncated: bool,
    segment_size: u16,
    received_ns: u64,
    listener: u32,
}

fn received(i: u64) -> Received {
    Received {
        from: SocketAddr::new(Ipv6Addr::LOCALHOST.into(), i as u16),
        to: SocketAddr::new(Ipv4Addr::new(192, 0, 2, i as u8).into(), 443),
        ecn: (i % 4) as u8,
        truncated: i % 3 == 0,
        segment_size: 1200 + i as u16,
        received_ns: i * 1_000,
        listener: (i % 7) as u32,
    }
}

#[test]
fn a_record_goes_in_with_its_entry_and_comes_out_with_it() {
    let (producer, mut consumer) = Ring::builder(1 << 12)
        .metadata::<Received>()
        .build()
        .unwrap();
    producer.push_with(b"first", received(1)).unwrap();
    let mut r = producer.reserve(1500).unwrap();
    r[..6].copy_from_slice(b"second");
    r.commit_len_with(6, received(2));
    let mut r = producer.reserve(3).unwrap();
    r.copy_from_slice(b"3rd");
    r.commit_with(received(3));

    let entry = consumer.read().unwrap();
    assert_eq!((&*entry, entry.meta()), (&b"first"[..], &received(1)));
    drop(entry);
    let mut seen = Vec::new();
    consumer.read_batch_meta(10, |meta, payload| seen.push((*meta, payload.to_vec())));
    assert_eq!(
        seen,
        vec![
            (received(2), b"second".to_vec()),
            (received(3), b"3rd".to_vec())
        ]
    );
    assert!(consumer.is_empty());
}

#[test]
fn the_record_takes_room_rounded_to_the_alignment_and_lowers_the_largest_payload() {
    let room = std::mem::size_of::<Received>().next_multiple_of(8);
    let (producer, mut consumer) = Ring::builder(1 << 12)
        .metadata::<Received>()
        .build()
        .unwrap();
    assert_eq!(producer.max_payload(), (1 << 11) - 8 - room);
    producer.push_with(&[1], received(1)).unwrap();
    assert_eq!(consumer.used_bytes(), 8 + room + 8);
    assert_eq!(
        producer.push_with(&vec![0; producer.max_payload() + 1], received(0)),
        Err(ReserveError::TooLarge {
            len: producer.max_payload() + 1,
            max: producer.max_payload()
        })
    );
    drop(consumer.read());
    // The largest payload still fits.
    producer
        .push_with(&vec![7; producer.max_payload()], received(9))
        .unwrap();
    let entry = consumer.read().unwrap();
    assert_eq!(
        (entry.len(), *entry.meta()),
        (producer.max_payload(), received(9))
    );
}

#[test]
fn without_metadata_the_layout_is_unchanged() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    assert_eq!(producer.max_payload(), 512 - 8);
    producer.push(&[1]).unwrap();
    assert_eq!(consumer.used_bytes(), 16); // header + 1 byte, rounded to 8
                                           // `()` records exist for generic code: zero bytes, always there.
    assert_eq!(consumer.read().unwrap().meta(), &());
}

#[test]
fn a_record_aligned_to_16_needs_16_byte_entries() {
    assert_eq!(
        Ring::builder(1024).metadata::<u128>().build().unwrap_err(),
        BuildError::MetadataAlignment {
            align: 16,
            entry_align: 8
        }
    );
    let (producer, mut consumer) = Ring::builder(1024)
        .alignment(Alignment::Sixteen)
        .metadata::<u128>()
        .build()
        .unwrap();
    for len in [0, 1, 15, 16, 17] {
        producer
            .push_with(&vec![len as u8; len], u128::MAX - len as u128)
            .unwrap();
    }
    for len in [0, 1, 15, 16, 17] {
        let entry = consumer.read().unwrap();
        assert_eq!(*entry.meta(), u128::MAX - len as u128);
        assert_eq!(&*entry, &vec![len as u8; len][..]);
        assert_eq!(entry.meta() as *const u128 as usize % 16, 0);
        assert_eq!(entry.as_ptr() as usize % 16, 0, "payloads stay aligned");
    }
}

#[test]
fn a_ring_too_small_for_two_records_is_refused() {
    // Two entries of header + 56-byte record: at least 128 bytes.
    assert_eq!(
        Ring::builder(64)
            .metadata::<[u64; 7]>()
            .build()
            .unwrap_err(),
        BuildError::TooSmall {
            capacity: 64,
            min: 128
        }
    );
    let (producer, _consumer) = Ring::builder(128).metadata::<[u64; 7]>().build().unwrap();
    assert_eq!(producer.max_payload(), 0);
    producer.push_with(&[], [1; 7]).unwrap();
}

#[test]
fn batch_records_follow_their_entries_when_they_move_together() {
    let (producer, mut consumer) = Ring::builder(1 << 15)
        .metadata::<Received>()
        .build()
        .unwrap();
    let mut batch = producer.reserve_batch(8, 1500).unwrap();
    let lens = [60usize, 0, 1500, 7, 1200];
    for (i, (slot, &len)) in batch.slots_mut().zip(&lens).enumerate() {
        slot[..len].fill(i as u8);
    }
    let commits: Vec<_> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| (len, received(i as u64)))
        .collect();
    batch.commit_with(&commits);
    for (i, &len) in lens.iter().enumerate() {
        let entry = consumer.read().unwrap();
        assert_eq!(*entry.meta(), received(i as u64));
        assert_eq!(&*entry, &vec![i as u8; len][..]);
    }
    assert!(consumer.read().is_none());
    // One producer: the three unused slots went back to the ring.
    consumer.release();
    assert_eq!(consumer.used_bytes(), 0);
}

#[test]
fn an_aborted_reservation_has_no_record_to_read() {
    let (producer, mut consumer) = Ring::builder(1024).metadata::<Received>().build().unwrap();
    let _other = producer.reserve(8).unwrap(); // keeps the aborted room from going back
    let mut r = producer.reserve(8).unwrap();
    r.fill(1);
    drop(r);
    drop(_other);
    producer.push_with(b"after", received(5)).unwrap();
    let entry = consumer.read().unwrap();
    assert_eq!((&*entry, *entry.meta()), (&b"after"[..], received(5)));
}

#[test]
fn read_timeout_and_waits_carry_the_record() {
    let (producer, mut consumer) = Ring::builder(1024).metadata::<u64>().build().unwrap();
    let writer = thread::spawn(move || producer.push_with(b"late", 77).unwrap());
    let entry = consumer
        .read_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!((&*entry, *entry.meta()), (&b"late"[..], 77));
    drop(entry);
    writer.join().unwrap();
}

#[test]
fn push_batch_with_is_all_or_nothing() {
    let (producer, mut consumer) = Ring::builder(256).metadata::<u32>().build().unwrap();
    let big = [0u8; 40]; // 8 + 8 + 40 = 56 bytes each
    let entries = [(&big[..], 1), (&big[..], 2)];
    producer.push_batch_with(&entries).unwrap();
    producer.push_batch_with(&entries).unwrap(); // 224 of 256 used
    assert_eq!(producer.push_batch_with(&entries), Err(ReserveError::Full));
    assert_eq!(producer.push_batch_with(&[]), Ok(()));
    let mut metas = Vec::new();
    consumer.read_batch_meta(usize::MAX, |meta, payload| {
        assert_eq!(payload, &big);
        metas.push(*meta);
    });
    assert_eq!(metas, [1, 2, 1, 2]);
    assert!(consumer.read().is_none());
}

/// Every producer commits records derived from its payloads, through every
/// commit path; the consumer checks each record against its payload.
#[test]
fn concurrent_producers_never_mix_records() {
    let per_producer: u64 = if cfg!(miri) { 40 } else { 20_000 };
    let (producer, mut consumer) = Ring::builder(1 << 12)
        .metadata::<Received>()
        .build()
        .unwrap();
    let writers: Vec<_> = (0..3u64)
        .map(|id| {
            let producer = producer.clone();
            thread::spawn(move || {
                let mut seq = 0;
                while seq < per_producer {
                    let key = id << 32 | seq;
                    let len = (seq % 97) as usize;
                    let payload = key.to_le_bytes().repeat(len / 8 + 1);
                    let result = match seq % 3 {
                        0 => producer.push_with(&payload[..len.max(8)], received(key)),
                        1 => producer.reserve_batch(4, 104).map(|mut batch| {
                            let len = len.max(8);
                            batch.slot_mut(0)[..len].copy_from_slice(&payload[..len]);
                            batch.commit_with(&[(len, received(key))]);
                        }),
                        _ => producer.push_batch_with(&[(&payload[..len.max(8)], received(key))]),
                    };
                    match result {
                        Ok(()) => seq += 1,
                        Err(ReserveError::Full) => thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    drop(producer);
    let mut next = [0u64; 3];
    loop {
        let n = consumer.read_batch_meta(64, |meta, payload| {
            let key = u64::from_le_bytes(payload[..8].try_into().unwrap());
            assert_eq!(*meta, received(key), "the record of entry {key:#x}");
            let (id, seq) = ((key >> 32) as usize, key & 0xffff_ffff);
            assert_eq!(seq, next[id], "per-producer order");
            next[id] += 1;
        });
        if n == 0 {
            if consumer.is_disconnected() && consumer.is_empty() {
                break;
            }
            thread::yield_now();
        }
    }
    assert_eq!(next, [per_producer; 3]);
    for w in writers {
        w.join().unwrap();
    }
}
