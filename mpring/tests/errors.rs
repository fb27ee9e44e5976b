//! Every error the crate returns, and when.

use mpring::{Alignment, BuildError, ReserveError, Ring};

#[test]
fn zero_capacity_is_refused() {
    assert_eq!(Ring::new(0).unwrap_err(), BuildError::ZeroCapacity);
}

#[test]
fn capacity_must_be_a_power_of_two() {
    for capacity in [3usize, 100, 1000, (1 << 20) + 8] {
        assert_eq!(
            Ring::new(capacity).unwrap_err(),
            BuildError::NotPowerOfTwo { capacity }
        );
    }
}

#[test]
fn capacity_must_hold_an_entry() {
    assert_eq!(
        Ring::new(8).unwrap_err(),
        BuildError::TooSmall {
            capacity: 8,
            min: 16
        }
    );
    assert!(Ring::new(16).is_ok());
    let sixteen = Ring::builder(16).alignment(Alignment::Sixteen).build();
    assert_eq!(
        sixteen.unwrap_err(),
        BuildError::TooSmall {
            capacity: 16,
            min: 32
        }
    );
}

#[test]
#[cfg_attr(miri, ignore = "Miri reports huge allocations instead of failing them")]
fn capacity_too_large_to_allocate_is_an_error_not_an_abort() {
    for shift in [usize::BITS - 1, usize::BITS - 2] {
        let capacity = 1usize << shift;
        assert_eq!(
            Ring::new(capacity).unwrap_err(),
            BuildError::TooLarge { capacity }
        );
    }
}

#[test]
fn too_large_entry_says_the_limit() {
    let (producer, _consumer) = Ring::new(4096).unwrap();
    assert_eq!(producer.max_payload(), 2040);
    let err = producer.reserve(2041).unwrap_err();
    assert_eq!(
        err,
        ReserveError::TooLarge {
            len: 2041,
            max: 2040
        }
    );
    assert!(err.to_string().contains("2040"));
    assert_eq!(
        producer.reserve(usize::MAX).unwrap_err(),
        ReserveError::TooLarge {
            len: usize::MAX,
            max: 2040
        }
    );
    assert!(producer.reserve(2040).is_ok());
}

#[test]
fn full_is_retryable() {
    let (producer, mut consumer) = Ring::new(64).unwrap();
    producer.push(&[1; 24]).unwrap();
    producer.push(&[2; 24]).unwrap();
    assert_eq!(producer.push(&[3]).unwrap_err(), ReserveError::Full);
    assert_eq!(producer.full_count(), 1);
    assert_eq!(consumer.read().unwrap()[0], 1);
    // Space is released once the consumer catches up, or at a batch end.
    assert_eq!(consumer.read().unwrap()[0], 2);
    assert!(consumer.read().is_none());
    producer.push(&[3]).unwrap();
    assert_eq!(producer.full_count(), 1);
}

#[test]
fn consumer_gone_is_disconnected() {
    let (producer, consumer) = Ring::new(64).unwrap();
    assert!(!producer.is_disconnected());
    drop(consumer);
    assert!(producer.is_disconnected());
    assert_eq!(producer.reserve(1).unwrap_err(), ReserveError::Disconnected);
    assert_eq!(producer.push(b"x").unwrap_err(), ReserveError::Disconnected);
}

#[test]
fn errors_display_and_are_std_errors() {
    let errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(ReserveError::Full),
        Box::new(ReserveError::Disconnected),
        Box::new(BuildError::ZeroCapacity),
        Box::new(BuildError::NotPowerOfTwo { capacity: 3 }),
    ];
    for e in errors {
        assert!(!e.to_string().is_empty());
    }
}
