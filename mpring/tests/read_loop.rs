//! The loop form of batch reading: `while let Some(entry) = batch.next()`.

use mpring::Ring;

#[test]
fn reads_up_to_max_in_order_and_releases_when_dropped() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    for i in 0..10u8 {
        producer.push(&[i; 3]).unwrap();
    }
    let mut seen = Vec::new();
    let mut batch = consumer.batch(4);
    while let Some(entry) = batch.next() {
        seen.push(entry[0]);
    }
    assert!(batch.next().is_none(), "a used-up batch stays empty");
    drop(batch);
    assert_eq!(seen, [0, 1, 2, 3]);
    // The four entries' space went back when the batch ended.
    assert_eq!(consumer.used_bytes(), 6 * 16);
    let mut batch = consumer.batch(usize::MAX);
    let mut rest = 0;
    while let Some(entry) = batch.next() {
        assert_eq!(entry[0], 4 + rest);
        rest += 1;
    }
    drop(batch);
    assert_eq!((rest, consumer.used_bytes()), (6, 0));
}

#[test]
fn break_and_question_mark_leave_the_rest_for_later() {
    fn handle(consumer: &mut mpring::Consumer<u16>) -> Result<u32, String> {
        let mut sum = 0;
        let mut batch = consumer.batch(64);
        while let Some(entry) = batch.next() {
            if *entry.meta() == 0 {
                return Err(format!("bad record for {:?}", &*entry));
            }
            sum += u32::from(*entry.meta());
        }
        Ok(sum)
    }
    let (producer, mut consumer) = Ring::builder(1024).metadata::<u16>().build().unwrap();
    producer.push_with(b"a", 1).unwrap();
    producer.push_with(b"b", 2).unwrap();
    producer.push_with(b"bad", 0).unwrap();
    producer.push_with(b"c", 3).unwrap();
    // The entry the error was about is consumed (it was handed out and
    // dropped); what follows is not.
    assert_eq!(
        handle(&mut consumer),
        Err("bad record for [98, 97, 100]".into())
    );
    assert_eq!(handle(&mut consumer), Ok(3));
    assert!(consumer.read().is_none());
}

#[test]
fn an_empty_ring_gives_an_empty_batch() {
    let (_producer, mut consumer) = Ring::new(64).unwrap();
    assert!(consumer.batch(8).next().is_none());
    assert!(consumer.batch(0).next().is_none());
}

/// Entries changed in place (as a stack that decrypts where it reads):
/// the change is seen through the entry, and the space comes back zeroed,
/// lap after lap, in both reading modes.
#[test]
fn entries_changed_in_place_come_back_zeroed() {
    for around in [false, true] {
        let (producer, mut consumer) = Ring::builder(256).read_around_open(around).build().unwrap();
        for lap in 0..20u8 {
            for i in 0..4u8 {
                producer.push(&[lap ^ i; 40]).unwrap();
            }
            let mut batch = consumer.batch(usize::MAX);
            let mut i = 0;
            while let Some(mut entry) = batch.next() {
                assert_eq!(*entry, [lap ^ i; 40]);
                for b in entry.iter_mut() {
                    *b = !*b;
                }
                assert_eq!(entry.as_mut(), [!(lap ^ i); 40]);
                i += 1;
            }
            drop(batch);
            assert_eq!(i, 4);
            // Every byte a fresh reservation gets is zero again.
            let reservation = producer.reserve(producer.max_payload().min(200)).unwrap();
            assert!(reservation.iter().all(|&b| b == 0), "lap {lap}");
            drop(reservation);
            assert!(consumer.read().is_none());
        }
    }
}
