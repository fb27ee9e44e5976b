//! Admission: free room visible to producers, a high-water mark, refusals
//! counted apart from `Full`.

use mpring::Ring;

#[test]
fn used_and_free_bytes_follow_claims_and_releases() {
    let (producer, mut consumer) = Ring::new(1024).unwrap();
    assert_eq!((producer.used_bytes(), producer.free_bytes()), (0, 1024));
    producer.push(&[1; 56]).unwrap(); // 8 + 56 = 64
    let open = producer.reserve(24).unwrap(); // 32, claimed while open
    assert_eq!((producer.used_bytes(), producer.free_bytes()), (96, 928));
    assert_eq!(consumer.used_bytes(), producer.used_bytes());
    drop(consumer.read());
    drop(open);
    assert!(consumer.read().is_none()); // steps over the abort, releases
    assert_eq!((producer.used_bytes(), producer.free_bytes()), (0, 1024));
}

#[test]
fn the_high_water_mark_sheds_new_work_before_the_ring_is_full() {
    let (producer, mut consumer) = Ring::builder(1024).high_water_mark(512).build().unwrap();
    let (mut established, mut refused) = (0, 0);
    // A listener that sheds Initial packets above the mark and keeps
    // every established connection's packet while there is room.
    for i in 0..100 {
        let initial = i % 2 == 0;
        let mut r = match producer.reserve(56) {
            Ok(r) => r,
            Err(mpring::ReserveError::Full) => break,
            Err(e) => panic!("{e}"),
        };
        r[0] = u8::from(initial);
        if initial && producer.above_high_water() {
            r.refuse();
            refused += 1;
        } else {
            r.commit();
            established += u32::from(!initial);
        }
    }
    assert_eq!(producer.refused_count(), refused);
    assert_eq!(consumer.refused_count(), refused);
    assert_eq!(producer.full_count(), 1, "refusals are not counted as Full");
    assert!(producer.used_bytes() > 512);
    // Past the mark only established packets got in.
    let mut kinds = Vec::new();
    consumer.read_batch(usize::MAX, |e| kinds.push(e[0]));
    assert!(established > 0 && refused > 0);
    assert!(
        kinds.iter().filter(|&&k| k == 1).count() <= 512 / 64 + 1,
        "Initial packets stop at the mark: {kinds:?}"
    );
}

#[test]
fn without_a_mark_nothing_is_above_it() {
    let (producer, _consumer) = Ring::new(256).unwrap();
    while producer.push(&[0; 24]).is_ok() {}
    assert_eq!(producer.free_bytes(), 0);
    assert!(!producer.above_high_water());
    let (producer, _consumer) = Ring::builder(256).high_water_mark(10_000).build().unwrap();
    while producer.push(&[0; 24]).is_ok() {}
    assert!(!producer.above_high_water());
}
