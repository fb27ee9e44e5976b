//! QUIC steering: which of N rings a datagram belongs to, from its
//! destination connection ID (DCID). Pure functions, and one system call:
//! [`ShardCids::attach_reuseport_steering`] has the kernel steer a group of
//! `SO_REUSEPORT` sockets alike.
//!
//! A server that runs one QUIC endpoint per ring (one handler per core, as
//! HAProxy's QUIC stack does) chooses its connection IDs so that each names
//! the shard that owns the connection ([`ShardCids`]). A listener then
//! steers every datagram with [`QuicSteering`]:
//!
//! 1. It reads the DCID of the datagram's **first** packet by the
//!    version-independent invariants of RFC 8999 ([`parse_dcid`]): a long
//!    header carries its DCID length, a short header's DCID has the server's
//!    fixed CID length. Coalesced packets follow the first one (they share
//!    a DCID anyway). The packet type is never looked at, and neither is
//!    the fixed bit (0x40), which quinn greases on about half its packets.
//! 2. A DCID of the server's length whose shard encoding is valid goes to
//!    that shard: every packet of an established connection, whatever its
//!    source address (a migrating or NAT-rebound client keeps its shard).
//! 3. Any other DCID (a client's first flight, whose DCID the client chose:
//!    20 bytes with quinn, 8 with most browsers) goes by a keyed hash of the
//!    DCID: every retransmit of the Initial, and its 0-RTT packets, carry
//!    the same DCID, so they reach the same shard, the one whose endpoint
//!    answered and chose the connection's next CIDs.
//! 4. A datagram that yields no DCID (too short, a long header whose DCID
//!    runs past its end, a zero-length DCID) goes by a hash of its source
//!    address.
//!
//! QUIC v1 (RFC 9000 section 17.2) and v2 (RFC 9369) share these
//! invariants; for those two versions a DCID longer than 20 bytes is
//! invalid and the datagram goes by its source. Other versions may carry up
//! to 255 bytes (RFC 8999), and go by their DCID, so that a server's
//! Version Negotiation reply comes from one shard per client attempt.
//!
//! ```
//! use std::net::SocketAddr;
//! use mpring::udp::steer::{QuicSteering, RouteBy, ShardCids};
//!
//! // 4 shards, 8-byte server CIDs.
//! let cids = ShardCids::new(4, 8)?;
//! let steering = QuicSteering::new(cids);
//! let client: SocketAddr = "192.0.2.7:50000".parse()?;
//!
//! // Shard 2's endpoint issues a CID (the random bytes come from the caller).
//! let cid = cids.generate(2, &[0x5a; 20]);
//! // A short-header packet (fixed bit set or cleared) carrying it.
//! let mut packet = vec![0x41];
//! packet.extend_from_slice(&cid);
//! packet.extend_from_slice(&[0xaa; 30]);
//! assert_eq!(steering.ring_for(client, &packet), 2);
//! packet[0] &= !0x40;
//! assert_eq!(steering.ring_for(client, &packet), 2);
//!
//! // A client's first Initial, with a 20-byte DCID of its own: by a hash of
//! // the DCID, the same for every retransmit, from any address.
//! let mut initial = vec![0xc0, 0, 0, 0, 1, 20];
//! initial.extend_from_slice(&[7; 20]);
//! initial.extend_from_slice(&[0; 40]);
//! let route = steering.route(client, &initial);
//! assert_eq!(route.by, RouteBy::DcidHash);
//! assert_eq!(steering.ring_for("198.51.100.1:443".parse()?, &initial), route.ring);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The CID encoding, and its trade-off
//!
//! [`ShardCids`] follows the QUIC-LB draft's (draft-ietf-quic-load-balancers)
//! *unencrypted* mode, with a one-byte server ID:
//!
//! ```text
//! byte 0        bits 7-5: config rotation, always 0b000 here (QUIC-LB
//!               reserves 0b111 for unroutable CIDs)
//!               bits 4-0: random
//! byte 1        the shard index (0 to 255)
//! bytes 2..len  random: the nonce (at least 4 bytes, as QUIC-LB asks)
//! ```
//!
//! A CID is valid for a server when it has the server's CID length, its
//! config rotation bits are 0b000 and its shard byte is below the shard
//! count. Steering costs a length compare and two byte reads, and a listener
//! needs no key.
//!
//! The price is linkability. RFC 9000 (sections 5.1 and 9.5) asks that the
//! CIDs of one connection not be linkable by an observer; here every CID a
//! connection uses shows the same shard byte, so an on-path observer who
//! sees a client migrate (new address, new CID) can tell that the old and
//! the new path belong to connections of the same shard: it narrows the
//! candidates to about 1/N of the server's connections (with N shards)
//! instead of learning nothing. It also shows how many shards the server
//! runs, and lets anyone aim packets (a flood of short-header packets, or
//! Initials whose client-chosen DCID has the server's length and a valid
//! encoding) at one chosen shard. The QUIC-LB draft's encrypted modes (one
//! AES-128 block for 16-byte CIDs, a four-pass Feistel network of AES
//! rounds for shorter ones) hide the shard behind a key shared by the
//! listeners and the endpoints: CIDs look random to observers, at the cost
//! of an AES decryption per datagram at the listener, a key to distribute
//! and rotate, and an AES implementation (mpring has no crypto dependency).
//! Keep the plaintext encoding where the shard count is small and the
//! listeners run in the server's own process; prefer an encrypted one where
//! unlinkability across migration matters.
//!
//! # The hash
//!
//! DCIDs without a valid encoding and source addresses are hashed with
//! FxHash's word step (rustc's hasher: rotate left by 5, xor an 8-byte
//! little-endian word, multiply by `0x517cc1b727220a95`), seeded with a
//! 64-bit key and the input's length, then finished with MurmurHash3's
//! 64-bit finalizer (`fmix64`) so that every output bit depends on every
//! input bit; the ring index is the high half of `hash * N` (Lemire's
//! multiply-shift: no division). A 20-byte DCID is three words: a few
//! nanoseconds. The key is chosen once per process at random
//! ([`QuicSteering::new`], from the standard library's `RandomState`), so
//! every steering value of a process routes alike, and a client cannot
//! predict which shard its DCIDs land on from outside;
//! [`QuicSteering::with_key`] fixes it (tests, benchmarks, several
//! processes that must agree). It is not a cryptographic hash: it spreads
//! honest traffic evenly, it does not stop a determined attacker, who can
//! aim at a shard through the plaintext encoding anyway.

use std::error::Error;
use std::fmt;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::OnceLock;

use super::UdpMeta;

/// QUIC version 1 (RFC 9000).
pub const QUIC_V1: u32 = 0x0000_0001;

/// QUIC version 2 (RFC 9369).
pub const QUIC_V2: u32 = 0x6b33_43cf;

/// The longest connection ID QUIC v1 and v2 allow (RFC 9000 section
/// 17.2), and the longest [`ShardCids`] makes.
pub const MAX_CID_LEN: usize = 20;

/// The shortest server CID [`ShardCids`] makes: the config byte, the shard
/// byte and a nonce of 4 bytes (the QUIC-LB draft's minimum).
pub const MIN_CID_LEN: usize = 6;

/// The most shards [`ShardCids`] encodes: the shard index is one byte.
pub const MAX_SHARDS: usize = 256;

/// The config rotation codepoint of every CID [`ShardCids`] makes (bits 7-5
/// of the first byte).
const CONFIG_ROTATION: u8 = 0b000;

/// Which header form a packet has (RFC 8999 section 5).
///
/// ```
/// use mpring::udp::steer::{parse_dcid, HeaderForm, QUIC_V2};
///
/// let packet = [0xd0, 0x6b, 0x33, 0x43, 0xcf, 1, 0xab, 0];
/// assert_eq!(parse_dcid(&packet, 8).unwrap().form, HeaderForm::Long { version: QUIC_V2 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderForm {
    /// A long header (first bit 1), with its version field (0 for a
    /// Version Negotiation packet).
    Long {
        /// The 32-bit version, as sent (big-endian on the wire).
        version: u32,
    },
    /// A short header (first bit 0): its DCID has the length the receiver
    /// chose for its own CIDs.
    Short,
}

/// The destination connection ID of a datagram's first packet, as
/// [`parse_dcid`] finds it.
///
/// ```
/// use mpring::udp::steer::{parse_dcid, HeaderForm};
///
/// let packet = [0x40, 1, 2, 3, 4, 5, 6, 7, 8, 0xff];
/// let dcid = parse_dcid(&packet, 8).unwrap();
/// assert_eq!(dcid.form, HeaderForm::Short);
/// assert_eq!(dcid.cid, &[1, 2, 3, 4, 5, 6, 7, 8]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dcid<'a> {
    /// The packet's header form (and version, for a long header).
    pub form: HeaderForm,
    /// The DCID's bytes (possibly empty).
    pub cid: &'a [u8],
}

/// Reads the destination connection ID of a datagram's first packet, by the
/// invariants of RFC 8999: a long header (first bit 1) is the first byte,
/// a 4-byte version, a DCID length byte and the DCID; a short header (first
/// bit 0) is the first byte and a DCID of `short_cid_len` bytes (the length
/// the receiving server chose for its CIDs). Nothing else is read: not the
/// fixed bit, not the packet type, not any later coalesced packet.
///
/// Returns `None` when the datagram is empty or ends inside the DCID, and
/// for a QUIC v1 or v2 long header whose DCID length is above 20 (invalid
/// in those versions; other versions may use up to 255 bytes). Never
/// panics, whatever the bytes.
///
/// ```
/// use mpring::udp::steer::{parse_dcid, HeaderForm, QUIC_V1};
///
/// // RFC 9001 appendix A.2: the client Initial's protected header.
/// let initial = [
///     0xc0, 0x00, 0x00, 0x00, 0x01, 0x08, 0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0x00,
///     0x00, 0x44, 0x9e, 0x7b, 0x9a, 0xec, 0x34,
/// ];
/// let dcid = parse_dcid(&initial, 8).unwrap();
/// assert_eq!(dcid.form, HeaderForm::Long { version: QUIC_V1 });
/// assert_eq!(dcid.cid, &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
///
/// assert_eq!(parse_dcid(&[], 8), None);
/// assert_eq!(parse_dcid(&initial[..10], 8), None); // ends inside the DCID
/// ```
pub fn parse_dcid(datagram: &[u8], short_cid_len: usize) -> Option<Dcid<'_>> {
    let (&first, rest) = datagram.split_first()?;
    if first & 0x80 == 0 {
        let cid = rest.get(..short_cid_len)?;
        return Some(Dcid {
            form: HeaderForm::Short,
            cid,
        });
    }
    let version = rest.get(..4)?;
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    let len = usize::from(*rest.get(4)?);
    if len > MAX_CID_LEN && (version == QUIC_V1 || version == QUIC_V2) {
        return None;
    }
    let cid = rest.get(5..5 + len)?;
    Some(Dcid {
        form: HeaderForm::Long { version },
        cid,
    })
}

/// Why [`ShardCids::new`] (or a CID generator built on it) refused its
/// configuration.
///
/// ```
/// use mpring::udp::steer::{ShardCids, ShardCidsError};
///
/// assert_eq!(ShardCids::new(0, 8), Err(ShardCidsError::NoShards));
/// assert_eq!(
///     ShardCids::new(300, 8),
///     Err(ShardCidsError::TooManyShards { shards: 300, max: 256 })
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardCidsError {
    /// A shard count of 0: no ring to steer to.
    NoShards,
    /// More shards than the encoding's shard byte can name.
    TooManyShards {
        /// The count asked for.
        shards: usize,
        /// The most the encoding allows ([`MAX_SHARDS`]).
        max: usize,
    },
    /// A CID length below [`MIN_CID_LEN`]: too little room for a nonce.
    CidTooShort {
        /// The length asked for.
        len: usize,
        /// The shortest allowed.
        min: usize,
    },
    /// A CID length above [`MAX_CID_LEN`], which QUIC v1 and v2 forbid.
    CidTooLong {
        /// The length asked for.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// A shard index that is not below the shard count (for a generator of
    /// one shard's CIDs).
    NoSuchShard {
        /// The index asked for.
        shard: usize,
        /// The shard count.
        shards: usize,
    },
}

impl fmt::Display for ShardCidsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ShardCidsError::NoShards => write!(f, "a shard count of 0"),
            ShardCidsError::TooManyShards { shards, max } => write!(
                f,
                "{shards} shards: the CID encoding names at most {max} (one byte)"
            ),
            ShardCidsError::CidTooShort { len, min } => write!(
                f,
                "a CID length of {len} bytes: at least {min} (config byte, shard byte, 4-byte nonce)"
            ),
            ShardCidsError::CidTooLong { len, max } => write!(
                f,
                "a CID length of {len} bytes: QUIC v1 and v2 allow at most {max}"
            ),
            ShardCidsError::NoSuchShard { shard, shards } => {
                write!(f, "shard {shard} of {shards}: shards are 0 to {}", shards - 1)
            }
        }
    }
}

impl Error for ShardCidsError {}

/// The shard encoding of a server's connection IDs: `shards` shards, CIDs of
/// `cid_len` bytes, laid out as the [module docs](self#the-cid-encoding-and-its-trade-off)
/// say (a config byte, the shard byte, a random nonce).
///
/// The value is small and `Copy`; the listeners' [`QuicSteering`] and every
/// shard's CID generator hold the same one.
///
/// ```
/// use mpring::udp::steer::ShardCids;
///
/// let cids = ShardCids::new(8, 8)?;
/// let cid = cids.generate(5, &[0xff; 20]);
/// assert_eq!(cid.len(), 8);
/// assert_eq!(cids.shard_of(&cid), Some(5));
/// assert_eq!(cids.shard_of(&cid[..7]), None); // not the server's length
/// # Ok::<(), mpring::udp::steer::ShardCidsError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardCids {
    shards: u16,
    cid_len: u8,
}

impl ShardCids {
    /// An encoding for `shards` shards (1 to [`MAX_SHARDS`]) and server CIDs
    /// of `cid_len` bytes ([`MIN_CID_LEN`] to [`MAX_CID_LEN`]; quinn's
    /// default is 8). Anything else is a typed error.
    ///
    /// ```
    /// use mpring::udp::steer::{ShardCids, ShardCidsError};
    ///
    /// assert!(ShardCids::new(256, 20).is_ok());
    /// assert_eq!(ShardCids::new(4, 4), Err(ShardCidsError::CidTooShort { len: 4, min: 6 }));
    /// assert_eq!(ShardCids::new(4, 21), Err(ShardCidsError::CidTooLong { len: 21, max: 20 }));
    /// ```
    pub fn new(shards: usize, cid_len: usize) -> Result<ShardCids, ShardCidsError> {
        if shards == 0 {
            return Err(ShardCidsError::NoShards);
        }
        if shards > MAX_SHARDS {
            return Err(ShardCidsError::TooManyShards {
                shards,
                max: MAX_SHARDS,
            });
        }
        if cid_len < MIN_CID_LEN {
            return Err(ShardCidsError::CidTooShort {
                len: cid_len,
                min: MIN_CID_LEN,
            });
        }
        if cid_len > MAX_CID_LEN {
            return Err(ShardCidsError::CidTooLong {
                len: cid_len,
                max: MAX_CID_LEN,
            });
        }
        Ok(ShardCids {
            shards: shards as u16,
            cid_len: cid_len as u8,
        })
    }

    /// The shard count.
    ///
    /// ```
    /// # use mpring::udp::steer::ShardCids;
    /// assert_eq!(ShardCids::new(4, 8).unwrap().shards(), 4);
    /// ```
    pub fn shards(&self) -> usize {
        usize::from(self.shards)
    }

    /// The length of the server's CIDs: also the DCID length of every
    /// short-header packet the server receives.
    ///
    /// ```
    /// # use mpring::udp::steer::ShardCids;
    /// assert_eq!(ShardCids::new(4, 8).unwrap().cid_len(), 8);
    /// ```
    pub fn cid_len(&self) -> usize {
        usize::from(self.cid_len)
    }

    /// Whether `shard` is below the shard count: a typed error otherwise
    /// ([`ShardCidsError::NoSuchShard`]), for a generator's constructor.
    ///
    /// ```
    /// # use mpring::udp::steer::{ShardCids, ShardCidsError};
    /// let cids = ShardCids::new(4, 8).unwrap();
    /// assert_eq!(cids.check_shard(3), Ok(()));
    /// assert_eq!(cids.check_shard(4), Err(ShardCidsError::NoSuchShard { shard: 4, shards: 4 }));
    /// ```
    pub fn check_shard(&self, shard: usize) -> Result<(), ShardCidsError> {
        if shard < self.shards() {
            Ok(())
        } else {
            Err(ShardCidsError::NoSuchShard {
                shard,
                shards: self.shards(),
            })
        }
    }

    /// A CID of shard `shard`, made of the caller's `random` bytes: the
    /// first [`cid_len`](Self::cid_len) of them are used, with bits 7-5 of
    /// the first byte set to the config rotation and the second byte
    /// replaced by the shard index. Pass fresh bytes from a
    /// cryptographically secure source for every CID (RFC 9000 asks CIDs to
    /// be unpredictable; mpring has no random source of its own).
    ///
    /// # Panics
    ///
    /// If `shard` is not below the shard count (check it once with
    /// [`check_shard`](Self::check_shard)).
    ///
    /// ```
    /// # use mpring::udp::steer::ShardCids;
    /// let cids = ShardCids::new(4, 6).unwrap();
    /// let cid = cids.generate(3, &[0xff; 20]);
    /// assert_eq!(&cid[..], &[0x1f, 3, 0xff, 0xff, 0xff, 0xff]);
    /// ```
    pub fn generate(&self, shard: usize, random: &[u8; MAX_CID_LEN]) -> Cid {
        assert!(
            shard < self.shards(),
            "shard {shard} of {} shards",
            self.shards
        );
        let mut bytes = *random;
        bytes[0] = CONFIG_ROTATION << 5 | (random[0] & 0x1f);
        bytes[1] = shard as u8;
        bytes[self.cid_len()..].fill(0);
        Cid {
            bytes,
            len: self.cid_len,
        }
    }

    /// The shard a CID names, if it is one of this server's: the server's
    /// length, the config rotation bits 0b000, a shard byte below the shard
    /// count. `None` for anything else (a client-chosen DCID, usually).
    ///
    /// ```
    /// # use mpring::udp::steer::ShardCids;
    /// let cids = ShardCids::new(4, 8).unwrap();
    /// assert_eq!(cids.shard_of(&[0x00, 2, 9, 9, 9, 9, 9, 9]), Some(2));
    /// assert_eq!(cids.shard_of(&[0x00, 4, 9, 9, 9, 9, 9, 9]), None); // shard 4 of 4
    /// assert_eq!(cids.shard_of(&[0xe0, 2, 9, 9, 9, 9, 9, 9]), None); // another config
    /// assert_eq!(cids.shard_of(&[0x00, 2, 9, 9, 9, 9, 9]), None); // 7 bytes
    /// ```
    pub fn shard_of(&self, cid: &[u8]) -> Option<usize> {
        if cid.len() != self.cid_len() || cid[0] >> 5 != CONFIG_ROTATION {
            return None;
        }
        let shard = usize::from(cid[1]);
        (shard < self.shards()).then_some(shard)
    }
}

impl ShardCids {
    /// Steers an `SO_REUSEPORT` group in the kernel as [`QuicSteering`]
    /// steers in user space: attaches to the group that `socket` belongs to
    /// a classic-BPF program (`SO_ATTACH_REUSEPORT_CBPF`; no privilege
    /// needed, Linux 4.5 or later) that delivers every datagram whose first
    /// packet's DCID is a CID of shard `k` to the group's socket `k` (its
    /// sockets are numbered in the order they were bound). Other datagrams:
    /// - a long header (a client's first flight) by its DCID's first four
    ///   bytes (for a DCID shorter than that, the bytes after it count)
    ///   modulo the shard count, the same socket for every retransmit from
    ///   any address;
    /// - a short header without a shard CID, or a datagram too short for
    ///   its header (under 10 bytes for a long one), by the kernel's own
    ///   hash of the 4-tuple; an empty datagram, to socket 0.
    ///
    /// Bind the group's [`shards`](Self::shards) sockets, in shard order,
    /// before any datagram arrives, then call this on any one of them. A
    /// shard CID agrees with [`QuicSteering::route`] (the same shard); the
    /// rest differs from its hashes, and a shard that also steers in user
    /// space should keep what is not a shard CID where it arrived.
    ///
    /// ```
    /// use std::net::UdpSocket;
    /// use mpring::udp::steer::ShardCids;
    ///
    /// let cids = ShardCids::new(2, 8)?;
    /// let group = mpring::udp::reuseport_group("127.0.0.1:0".parse()?, 2)?;
    /// cids.attach_reuseport_steering(&group[0])?;
    ///
    /// let mut packet = vec![0x40]; // a short header
    /// packet.extend_from_slice(&cids.generate(1, &[7; 20]));
    /// UdpSocket::bind("127.0.0.1:0")?.send_to(&packet, group[0].local_addr()?)?;
    /// let mut buf = [0; 64];
    /// assert_eq!(group[1].recv(&mut buf)?, 9); // shard 1's socket
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The system call's: for example `socket` is not bound with
    /// `SO_REUSEPORT`, or the kernel lacks reuseport programs.
    pub fn attach_reuseport_steering(&self, socket: &std::net::UdpSocket) -> std::io::Result<()> {
        crate::sys::udp::attach_reuseport_cbpf(socket, &self.reuseport_program())
    }

    /// The program [`attach_reuseport_steering`](Self::attach_reuseport_steering)
    /// attaches. It sees the UDP payload from offset 0 (the kernel pulls
    /// the UDP header first); a load past the end stops it with 0, and a
    /// result at or past the group's size makes the kernel hash the
    /// 4-tuple instead.
    pub(crate) fn reuseport_program(&self) -> Vec<libc::sock_filter> {
        use libc::{
            BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD,
            BPF_LEN, BPF_MISC, BPF_MOD, BPF_RET, BPF_RSH, BPF_TAX, BPF_TXA, BPF_W,
        };
        let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let (len, shards) = (self.cid_len as u32, u32::from(self.shards));
        let config = u32::from(CONFIG_ROTATION);
        // Jump offsets count from the next instruction.
        #[rustfmt::skip]
        let program = vec![
            /* 0 */ op(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0), // A = datagram length
            /* 1 */ op(BPF_MISC | BPF_TAX, 0, 0, 0), // X = A
            /* 2 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0), // A = first byte
            /* 3 */ op(BPF_JMP | BPF_JSET | BPF_K, 7, 0, 0x80), // long header: 11
            // Short header: the DCID is bytes 1..=len.
            /* 4 */ op(BPF_MISC | BPF_TXA, 0, 0, 0),
            /* 5 */ op(BPF_JMP | BPF_JGE | BPF_K, 0, 20, 1 + len), // too short: 26
            /* 6 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 1), // config byte
            /* 7 */ op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 5),
            /* 8 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 17, config), // another config: 26
            /* 9 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 2), // the shard byte
            /* 10 */ op(BPF_RET | BPF_A, 0, 0, 0), // (past the group: hashed)
            // Long header: the DCID length is byte 5, the DCID from byte 6.
            /* 11 */ op(BPF_MISC | BPF_TXA, 0, 0, 0),
            /* 12 */ op(BPF_JMP | BPF_JGE | BPF_K, 0, 13, 10), // no four bytes at 6: 26
            /* 13 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 5),
            /* 14 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 8, len), // not ours: 23
            /* 15 */ op(BPF_MISC | BPF_TXA, 0, 0, 0),
            /* 16 */ op(BPF_JMP | BPF_JGE | BPF_K, 0, 6, 6 + len), // ends inside: 23
            /* 17 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 6),
            /* 18 */ op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 5),
            /* 19 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, config), // another config: 23
            /* 20 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 7), // the shard byte
            /* 21 */ op(BPF_JMP | BPF_JGE | BPF_K, 1, 0, shards), // no such shard: 23
            /* 22 */ op(BPF_RET | BPF_A, 0, 0, 0),
            // Any other long header: by the DCID's first four bytes.
            /* 23 */ op(BPF_LD | BPF_W | BPF_ABS, 0, 0, 6),
            /* 24 */ op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, shards),
            /* 25 */ op(BPF_RET | BPF_A, 0, 0, 0),
            // No shard CID, and nothing to hash: the kernel's hash.
            /* 26 */ op(BPF_RET | BPF_K, 0, 0, u32::MAX),
        ];
        program
    }
}

/// A connection ID made by [`ShardCids::generate`]: up to
/// [`MAX_CID_LEN`] bytes, read through `Deref<Target = [u8]>`.
///
/// ```
/// # use mpring::udp::steer::ShardCids;
/// let cid = ShardCids::new(2, 8).unwrap().generate(1, &[0; 20]);
/// assert_eq!(cid.as_ref(), &[0, 1, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(format!("{cid:?}"), "Cid(0001000000000000)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cid {
    bytes: [u8; MAX_CID_LEN],
    len: u8,
}

impl Deref for Cid {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for Cid {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cid(")?;
        for b in self.iter() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// How [`QuicSteering::route`] chose a ring.
///
/// ```
/// use mpring::udp::steer::{QuicSteering, RouteBy, ShardCids};
///
/// let steering = QuicSteering::new(ShardCids::new(2, 8).unwrap());
/// let source = "192.0.2.1:4000".parse().unwrap();
/// assert_eq!(steering.route(source, &[]).by, RouteBy::Source);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteBy {
    /// The DCID is one of the server's CIDs: its shard.
    ShardCid,
    /// The DCID is not (a client's first flight, or a stale or forged
    /// CID): a hash of the DCID.
    DcidHash,
    /// No DCID could be read (or it is empty): a hash of the source
    /// address. Malformed datagrams land here; count them if you like.
    Source,
}

/// Where [`QuicSteering::route`] sends a datagram, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The ring (shard) index, below the shard count.
    pub ring: usize,
    /// How it was chosen.
    pub by: RouteBy,
}

/// Steers QUIC datagrams to one of N rings by their destination CID, as the
/// [module docs](self) describe. Small, `Copy`, `Send` and `Sync`: give each
/// listener thread a copy.
///
/// ```
/// use mpring::udp::steer::{QuicSteering, ShardCids};
///
/// let steering = QuicSteering::new(ShardCids::new(4, 8)?);
/// let source = "192.0.2.1:4000".parse()?;
/// let mut packet = vec![0x40];
/// packet.extend_from_slice(&steering.cids().generate(1, &[3; 20]));
/// assert_eq!(steering.ring_for(source, &packet), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicSteering {
    cids: ShardCids,
    key: u64,
}

impl QuicSteering {
    /// Steering for servers whose CIDs follow `cids`, with this process's
    /// random hash key (the same for every steering value of the process).
    ///
    /// ```
    /// # use mpring::udp::steer::{QuicSteering, ShardCids};
    /// let cids = ShardCids::new(4, 8).unwrap();
    /// assert_eq!(QuicSteering::new(cids), QuicSteering::new(cids));
    /// ```
    pub fn new(cids: ShardCids) -> QuicSteering {
        QuicSteering::with_key(cids, process_key())
    }

    /// Steering with a hash key of the caller's: the same key routes the
    /// same DCIDs and sources the same way in every process and every run.
    ///
    /// ```
    /// # use mpring::udp::steer::{QuicSteering, ShardCids};
    /// let steering = QuicSteering::with_key(ShardCids::new(4, 8).unwrap(), 42);
    /// let initial = [0xc0, 0, 0, 0, 1, 4, 1, 2, 3, 4, 0];
    /// let source = "192.0.2.1:4000".parse().unwrap();
    /// let again = QuicSteering::with_key(ShardCids::new(4, 8).unwrap(), 42);
    /// assert_eq!(steering.ring_for(source, &initial), again.ring_for(source, &initial));
    /// ```
    pub fn with_key(cids: ShardCids, key: u64) -> QuicSteering {
        QuicSteering { cids, key }
    }

    /// The CID encoding it steers by.
    ///
    /// ```
    /// # use mpring::udp::steer::{QuicSteering, ShardCids};
    /// let cids = ShardCids::new(4, 8).unwrap();
    /// assert_eq!(QuicSteering::new(cids).cids(), cids);
    /// ```
    pub fn cids(&self) -> ShardCids {
        self.cids
    }

    /// The number of rings (the shard count).
    ///
    /// ```
    /// # use mpring::udp::steer::{QuicSteering, ShardCids};
    /// assert_eq!(QuicSteering::new(ShardCids::new(4, 8).unwrap()).shards(), 4);
    /// ```
    pub fn shards(&self) -> usize {
        self.cids.shards()
    }

    /// The ring for a datagram from `source`, and how it was chosen: by its
    /// first packet's DCID when it has one (the shard a server CID names,
    /// or a hash of any other DCID), by a hash of `source` otherwise. Always
    /// below [`shards`](Self::shards); never panics.
    ///
    /// ```
    /// use mpring::udp::steer::{QuicSteering, Route, RouteBy, ShardCids};
    ///
    /// let steering = QuicSteering::new(ShardCids::new(4, 8)?);
    /// let source = "192.0.2.1:4000".parse()?;
    /// // A Handshake packet (v1) to shard 3's CID, coalesced with a
    /// // short-header packet: the first packet decides.
    /// let cid = steering.cids().generate(3, &[1; 20]);
    /// let mut datagram = vec![0xe0, 0, 0, 0, 1, 8];
    /// datagram.extend_from_slice(&cid);
    /// datagram.extend_from_slice(&[0, 0x40, 0x10]);
    /// datagram.extend_from_slice(&[0; 16]);
    /// datagram.push(0x40);
    /// datagram.extend_from_slice(&steering.cids().generate(0, &[2; 20]));
    /// assert_eq!(steering.route(source, &datagram), Route { ring: 3, by: RouteBy::ShardCid });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn route(&self, source: SocketAddr, datagram: &[u8]) -> Route {
        match parse_dcid(datagram, self.cids.cid_len()) {
            Some(Dcid { cid, .. }) if !cid.is_empty() => match self.cids.shard_of(cid) {
                Some(ring) => Route {
                    ring,
                    by: RouteBy::ShardCid,
                },
                None => Route {
                    ring: self.reduce(hash_bytes(self.key, cid)),
                    by: RouteBy::DcidHash,
                },
            },
            _ => Route {
                ring: self.reduce(hash_source(self.key, source)),
                by: RouteBy::Source,
            },
        }
    }

    /// The ring for a datagram from `source`: [`route`](Self::route)'s
    /// ring.
    ///
    /// ```
    /// # use mpring::udp::steer::{QuicSteering, ShardCids};
    /// let steering = QuicSteering::new(ShardCids::new(4, 8).unwrap());
    /// let source = "[2001:db8::1]:4000".parse().unwrap();
    /// assert!(steering.ring_for(source, b"not quic") < 4);
    /// ```
    pub fn ring_for(&self, source: SocketAddr, datagram: &[u8]) -> usize {
        self.route(source, datagram).ring
    }

    /// The ring for one datagram a listener received: [`ring_for`](Self::ring_for)
    /// with `meta.source`. With GRO, steer each segment
    /// ([`UdpMeta::segments`]): a coalesced entry is one flow, but its
    /// segments may carry different CIDs.
    ///
    /// ```
    /// use std::time::Instant;
    /// use mpring::udp::steer::{QuicSteering, ShardCids};
    /// use mpring::udp::UdpMeta;
    ///
    /// let steering = QuicSteering::new(ShardCids::new(4, 8).unwrap());
    /// let meta = UdpMeta {
    ///     source: "192.0.2.1:4000".parse().unwrap(),
    ///     destination: None,
    ///     ecn: 0,
    ///     segment_size: 0,
    ///     received: Instant::now(),
    ///     listener: 0,
    /// };
    /// let mut packet = vec![0x5c];
    /// packet.extend_from_slice(&steering.cids().generate(2, &[9; 20]));
    /// assert_eq!(steering.steer(&meta, &packet), 2);
    /// ```
    pub fn steer(&self, meta: &UdpMeta, datagram: &[u8]) -> usize {
        self.ring_for(meta.source, datagram)
    }

    /// Lemire's multiply-shift: the high half of `hash * shards`.
    fn reduce(&self, hash: u64) -> usize {
        ((u128::from(hash) * u128::from(self.cids.shards)) >> 64) as usize
    }
}

/// The hash key stays out of logs.
impl fmt::Debug for QuicSteering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicSteering")
            .field("cids", &self.cids)
            .finish_non_exhaustive()
    }
}

/// FxHash's multiplier (rustc's hasher).
const FX: u64 = 0x517c_c1b7_2722_0a95;

/// This process's hash key: random, chosen once.
fn process_key() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(|| {
        std::collections::hash_map::RandomState::new().hash_one(0x6d70_7269_6e67u64)
    })
}

/// FxHash's word step over 8-byte little-endian words (the last one padded
/// with zeros), seeded with the key and the length, then MurmurHash3's
/// `fmix64`.
fn hash_bytes(key: u64, bytes: &[u8]) -> u64 {
    let mut h = key ^ (bytes.len() as u64).wrapping_mul(FX);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        h = fx_step(h, le_word(word));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        h = fx_step(h, le_word(tail));
    }
    fmix64(h)
}

/// The source address's IP bytes and port, hashed as bytes (with a
/// different seed than DCIDs).
fn hash_source(key: u64, source: SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    let len = match source {
        SocketAddr::V4(a) => {
            buf[..4].copy_from_slice(&a.ip().octets());
            buf[4..6].copy_from_slice(&a.port().to_le_bytes());
            6
        }
        SocketAddr::V6(a) => {
            buf[..16].copy_from_slice(&a.ip().octets());
            buf[16..].copy_from_slice(&a.port().to_le_bytes());
            18
        }
    };
    hash_bytes(key ^ 0x9e37_79b9_7f4a_7c15, &buf[..len])
}

fn fx_step(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(FX)
}

/// Up to 8 bytes as a little-endian word, zero-padded.
fn le_word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

/// MurmurHash3's 64-bit finalizer.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn source() -> SocketAddr {
        "192.0.2.10:54321".parse().unwrap()
    }

    fn random_cid_bytes(rng: &mut SmallRng) -> [u8; MAX_CID_LEN] {
        let mut b = [0u8; MAX_CID_LEN];
        rng.fill(&mut b[..]);
        b
    }

    /// A short-header packet: first byte `first` (bit 7 cleared), the CID,
    /// a packet number and some payload.
    fn short_packet(first: u8, cid: &[u8], payload: usize) -> Vec<u8> {
        let mut p = vec![first & 0x7f];
        p.extend_from_slice(cid);
        p.extend(std::iter::repeat(0xa5).take(payload));
        p
    }

    /// A long-header packet of `version` with the given first byte (bit 7
    /// set), DCID, an 8-byte SCID and some payload.
    fn long_packet(first: u8, version: u32, dcid: &[u8], payload: usize) -> Vec<u8> {
        let mut p = vec![first | 0x80];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(dcid.len() as u8);
        p.extend_from_slice(dcid);
        p.push(8);
        p.extend_from_slice(&[0xc1; 8]);
        p.extend(std::iter::repeat(0x5a).take(payload));
        p
    }

    #[test]
    fn configuration_errors_are_typed() {
        assert_eq!(ShardCids::new(0, 8), Err(ShardCidsError::NoShards));
        assert_eq!(
            ShardCids::new(257, 8),
            Err(ShardCidsError::TooManyShards {
                shards: 257,
                max: 256
            })
        );
        assert_eq!(
            ShardCids::new(usize::MAX, 8),
            Err(ShardCidsError::TooManyShards {
                shards: usize::MAX,
                max: 256
            })
        );
        assert_eq!(
            ShardCids::new(4, 5),
            Err(ShardCidsError::CidTooShort { len: 5, min: 6 })
        );
        assert_eq!(
            ShardCids::new(4, 0),
            Err(ShardCidsError::CidTooShort { len: 0, min: 6 })
        );
        assert_eq!(
            ShardCids::new(4, 21),
            Err(ShardCidsError::CidTooLong { len: 21, max: 20 })
        );
        // 0 shards is reported first, whatever the length.
        assert_eq!(ShardCids::new(0, 0), Err(ShardCidsError::NoShards));
        for (shards, len) in [(1, 6), (256, 6), (1, 20), (256, 20), (7, 8)] {
            let cids = ShardCids::new(shards, len).unwrap();
            assert_eq!((cids.shards(), cids.cid_len()), (shards, len));
        }
        let cids = ShardCids::new(3, 8).unwrap();
        assert_eq!(cids.check_shard(2), Ok(()));
        assert_eq!(
            cids.check_shard(3),
            Err(ShardCidsError::NoSuchShard {
                shard: 3,
                shards: 3
            })
        );
        // Every error says what was wrong.
        for e in [
            ShardCidsError::NoShards,
            ShardCidsError::TooManyShards {
                shards: 257,
                max: 256,
            },
            ShardCidsError::CidTooShort { len: 5, min: 6 },
            ShardCidsError::CidTooLong { len: 21, max: 20 },
            ShardCidsError::NoSuchShard {
                shard: 3,
                shards: 3,
            },
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    #[should_panic(expected = "shard 4 of 4 shards")]
    fn generating_for_a_shard_out_of_range_panics() {
        ShardCids::new(4, 8).unwrap().generate(4, &[0; 20]);
    }

    /// Every CID shard k's generator makes routes to k, in a short header
    /// and in long headers of v1 and v2 (all four types), with the fixed
    /// bit set and cleared, from any source, whatever the other bits.
    #[test]
    fn every_generated_cid_routes_to_its_shard() {
        let mut rng = SmallRng::seed_from_u64(22);
        let sources: [SocketAddr; 3] = [
            source(),
            "[2001:db8::7]:443".parse().unwrap(),
            "10.1.2.3:1".parse().unwrap(),
        ];
        for shards in [1, 2, 3, 4, 8, 16, 100, 255, 256] {
            for cid_len in MIN_CID_LEN..=MAX_CID_LEN {
                let cids = ShardCids::new(shards, cid_len).unwrap();
                let steering = QuicSteering::with_key(cids, rng.gen());
                let per_shard = if shards > 16 { 2 } else { 16 };
                for shard in 0..shards {
                    for _ in 0..per_shard {
                        let cid = cids.generate(shard, &random_cid_bytes(&mut rng));
                        assert_eq!(cid.len(), cid_len);
                        assert_eq!(cids.shard_of(&cid), Some(shard));
                        let expect = Route {
                            ring: shard,
                            by: RouteBy::ShardCid,
                        };
                        let low: u8 = rng.gen::<u8>() & 0x3f;
                        for fixed in [0x40, 0x00] {
                            let from = sources[rng.gen_range(0..sources.len())];
                            let p = short_packet(fixed | low, &cid, rng.gen_range(0..64));
                            assert_eq!(steering.route(from, &p), expect, "{cid:?} short");
                            // Just the header, no payload.
                            let p = short_packet(fixed | low, &cid, 0);
                            assert_eq!(steering.route(from, &p), expect);
                            for version in [QUIC_V1, QUIC_V2] {
                                for ty in 0..4u8 {
                                    let first = fixed | ty << 4 | (low & 0x0f);
                                    let p = long_packet(first, version, &cid, 40);
                                    assert_eq!(
                                        steering.route(from, &p),
                                        expect,
                                        "{cid:?} long {version:#x} type {ty}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The CIDs shard k makes look random but for the shard byte and the
    /// config bits: the nonce is the caller's bytes.
    #[test]
    fn generated_cids_keep_the_callers_random_bytes() {
        let cids = ShardCids::new(16, 20).unwrap();
        let random: [u8; 20] = core::array::from_fn(|i| 0xf0 ^ i as u8);
        let cid = cids.generate(9, &random);
        assert_eq!(cid[0], random[0] & 0x1f);
        assert_eq!(cid[1], 9);
        assert_eq!(&cid[2..], &random[2..]);
        let short = ShardCids::new(16, 8).unwrap().generate(9, &random);
        assert_eq!(&short[2..], &random[2..8]);
        assert_eq!(short.as_ref().len(), 8);
    }

    /// RFC 9001 appendix A: the QUIC v1 sample packets' headers, typed out
    /// as the RFC gives them (protected and unprotected), with the start of
    /// their protected payload.
    #[test]
    fn rfc9001_v1_sample_packets() {
        let dcid = hex("8394c8f03e515708");
        // A.2: the client Initial, protected (as sent) and unprotected.
        let client_protected =
            hex("c000000001088394c8f03e5157080000449e7b9aec34 d1b1c98dd7689fb8ec11d242b123dc9b");
        let client_unprotected = hex("c300000001088394c8f03e5157080000449e00000002");
        for p in [&client_protected, &client_unprotected] {
            let d = parse_dcid(p, 8).unwrap();
            assert_eq!(d.form, HeaderForm::Long { version: QUIC_V1 });
            assert_eq!(d.cid, &dcid[..]);
            // Whatever the server's CID length: a long header says its own.
            assert_eq!(parse_dcid(p, 20).unwrap().cid, &dcid[..]);
        }
        // A.3: the server Initial: empty DCID (the client chose none),
        // SCID f067a5502a4262b5.
        let server = hex("cf000000010008f067a5502a4262b5004075c0d9 5a482cd0991cd25b0aac406a");
        let d = parse_dcid(&server, 8).unwrap();
        assert_eq!(
            (d.form, d.cid),
            (HeaderForm::Long { version: QUIC_V1 }, &[][..])
        );
        // A.4: the Retry packet, complete.
        let retry = hex("ff000000010008f067a5502a4262b5746f6b656e04a265ba2eff4d829058fb3f0f2496ba");
        let d = parse_dcid(&retry, 8).unwrap();
        assert_eq!(
            (d.form, d.cid),
            (HeaderForm::Long { version: QUIC_V1 }, &[][..])
        );
        // A.5: the ChaCha20 short-header packet, complete (empty DCID).
        let short = hex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb");
        let d = parse_dcid(&short, 0).unwrap();
        assert_eq!((d.form, d.cid), (HeaderForm::Short, &[][..]));
        assert_eq!(parse_dcid(&short, 8).unwrap().cid, &short[1..9]);

        // Steering, with 8-byte server CIDs: the client's DCID has the
        // server's length, but its first byte (0x83) has config bits 0b100:
        // not a server CID, so a hash of the DCID, from any source.
        for shards in [1, 2, 4, 7, 256] {
            let steering = QuicSteering::with_key(ShardCids::new(shards, 8).unwrap(), 7);
            let route = steering.route(source(), &client_protected);
            assert_eq!(route.by, RouteBy::DcidHash);
            assert_eq!(
                steering.route("[::1]:9".parse().unwrap(), &client_unprotected),
                route
            );
            // Empty DCIDs: by the source.
            assert_eq!(steering.route(source(), &server).by, RouteBy::Source);
            assert_eq!(steering.route(source(), &retry).by, RouteBy::Source);
            // The short-header packet is read with the server's length.
            assert_eq!(steering.route(source(), &short).by, RouteBy::DcidHash);
        }
    }

    /// RFC 9369 appendix A: the QUIC v2 sample packets' headers (version
    /// 0x6b3343cf), typed out as the RFC gives them.
    #[test]
    fn rfc9369_v2_sample_packets() {
        let dcid = hex("8394c8f03e515708");
        // A.2: the client Initial, protected and unprotected.
        let client_protected =
            hex("d76b3343cf088394c8f03e5157080000449ea0c95e82 ffe67b6abcdb4298b485dd04de806071");
        let client_unprotected = hex("d36b3343cf088394c8f03e5157080000449e00000002");
        for p in [&client_protected, &client_unprotected] {
            let d = parse_dcid(p, 8).unwrap();
            assert_eq!(d.form, HeaderForm::Long { version: QUIC_V2 });
            assert_eq!(d.cid, &dcid[..]);
        }
        // A.3: the server Initial (v2's Initial type bits are 01).
        let server = hex("dc6b3343cf0008f067a5502a4262b5004075d92f aaf16f05d8a4398c47089698");
        let server_unprotected = hex("d16b3343cf0008f067a5502a4262b50040750001");
        for p in [&server, &server_unprotected] {
            let d = parse_dcid(p, 8).unwrap();
            assert_eq!(
                (d.form, d.cid),
                (HeaderForm::Long { version: QUIC_V2 }, &[][..])
            );
        }
        // A.4: the Retry packet, complete.
        let retry = hex("cf6b3343cf0008f067a5502a4262b5746f6b656ec8646ce8bfe33952d955543665dcc7b6");
        let d = parse_dcid(&retry, 8).unwrap();
        assert_eq!(
            (d.form, d.cid),
            (HeaderForm::Long { version: QUIC_V2 }, &[][..])
        );

        // v1 and v2 Initials with the same DCID go to the same ring: the
        // version plays no part, nor does the packet type.
        let v1 = hex("c000000001088394c8f03e5157080000449e7b9aec34");
        for shards in [2, 3, 8, 64] {
            let steering = QuicSteering::new(ShardCids::new(shards, 8).unwrap());
            let route = steering.route(source(), &client_protected);
            assert_eq!(route.by, RouteBy::DcidHash);
            assert_eq!(steering.route(source(), &client_unprotected), route);
            assert_eq!(steering.route(source(), &v1), route);
            assert_eq!(steering.route(source(), &server).by, RouteBy::Source);
            assert_eq!(steering.route(source(), &retry).by, RouteBy::Source);
        }
    }

    /// Real datagrams of one quinn 0.11 client connection (their first
    /// bytes), recorded by mpring-quic's tests/steer_quinn.rs: the server's
    /// endpoint made its CIDs with shard 3 of 4's generator (8 bytes).
    #[test]
    fn quinn_client_packets() {
        // The first datagram: a v1 Initial with the client's own 20-byte
        // DCID (23c67e...8149) and 8-byte SCID, token length 0, length 0x48a.
        let initial = hex(
            "c000000001 14 23c67e4e4847a19e8e4551d4a90dc3f9944c8149 08 6d6c0b7502159180 00 448a
             e659e027f93881b515897c4c7bb056f58749aa350b96335b7db9",
        );
        // After the server's first flight: an Initial (type 0, the fixed bit
        // greased away) to the server's CID 1403c28e6a5cfc92 (shard 3).
        let long_to_server =
            hex("89 00000001 08 1403c28e6a5cfc92 08 6d6c0b7502159180 00 4017 b73643bc4626");
        // 1-RTT packets to the same CID, the fixed bit set and cleared.
        let short_set = hex("56 1403c28e6a5cfc92 14c70ae0224148cbb77bd30070162c1a1f8d41b32688cf");
        let short_cleared =
            hex("23 1403c28e6a5cfc92 b0531f9bd4db1dd0c0c3575894303fac8fb48476afa2c3");

        let cids = ShardCids::new(4, 8).unwrap();
        let d = parse_dcid(&initial, 8).unwrap();
        assert_eq!(d.form, HeaderForm::Long { version: QUIC_V1 });
        assert_eq!(d.cid, &initial[6..26]);
        assert_eq!(cids.shard_of(&initial[6..26]), None);
        let server_cid = hex("1403c28e6a5cfc92");
        assert_eq!(cids.shard_of(&server_cid), Some(3));
        for p in [&long_to_server, &short_set, &short_cleared] {
            assert_eq!(parse_dcid(p, 8).unwrap().cid, &server_cid[..]);
        }

        for shards in [4, 5, 8, 256] {
            let steering = QuicSteering::new(ShardCids::new(shards, 8).unwrap());
            let first = steering.route(source(), &initial);
            assert_eq!(first.by, RouteBy::DcidHash);
            assert_eq!(steering.route("[::1]:1".parse().unwrap(), &initial), first);
            let expect = Route {
                ring: 3,
                by: RouteBy::ShardCid,
            };
            for p in [&long_to_server, &short_set, &short_cleared] {
                assert_eq!(steering.route(source(), p), expect);
            }
        }
        // With fewer shards than 4, shard 3's CIDs are not this server's:
        // they go by their hash, still one ring for all three packets.
        let steering = QuicSteering::new(ShardCids::new(3, 8).unwrap());
        let route = steering.route(source(), &short_set);
        assert_eq!(route.by, RouteBy::DcidHash);
        assert_eq!(steering.route(source(), &short_cleared), route);
        assert_eq!(steering.route(source(), &long_to_server), route);
    }

    /// The same DCID routes the same way whatever else the packet holds:
    /// retransmits of an Initial (new packet number, new payload, another
    /// source after a NAT rebinding, the fixed bit greased or not), and in
    /// every steering value of the process.
    #[test]
    fn the_same_dcid_routes_the_same_way() {
        let mut rng = SmallRng::seed_from_u64(9);
        let cids = ShardCids::new(8, 8).unwrap();
        let a = QuicSteering::new(cids);
        let b = QuicSteering::new(cids);
        assert_eq!(a, b, "one key per process");
        for _ in 0..1000 {
            let len = rng.gen_range(1..=20);
            let mut dcid = vec![0u8; len];
            rng.fill(&mut dcid[..]);
            let first = long_packet(0xc0 | rng.gen::<u8>() & 0x0f, QUIC_V1, &dcid, 1200);
            let route = a.route(source(), &first);
            assert_ne!(route.by, RouteBy::Source);
            for _ in 0..4 {
                let fixed = if rng.gen() { 0x40 } else { 0 };
                let version = if rng.gen() { QUIC_V1 } else { QUIC_V2 };
                let again = long_packet(
                    0x80 | fixed | rng.gen::<u8>() & 0x3f,
                    version,
                    &dcid,
                    rng.gen_range(0..1300),
                );
                let from = SocketAddr::from(([10, 0, 0, rng.gen()], rng.gen()));
                assert_eq!(b.route(from, &again), route);
            }
        }
    }

    /// Datagrams that yield no DCID go by their source: the same source,
    /// the same ring.
    #[test]
    fn malformed_datagrams_go_by_source() {
        let cids = ShardCids::new(8, 8).unwrap();
        let steering = QuicSteering::with_key(cids, 1);
        let mut v21 = vec![0xc0, 0, 0, 0, 1, 21];
        v21.extend_from_slice(&[1; 21]);
        let mut v2_255 = vec![0xc0, 0x6b, 0x33, 0x43, 0xcf, 255];
        v2_255.extend_from_slice(&[1; 300]);
        let cases: [&[u8]; 9] = [
            &[],
            &[0x80],
            &[0xc0, 0, 0, 0],
            &[0xc0, 0, 0, 0, 1],
            &[0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7],
            &[0x40, 1, 2, 3, 4, 5, 6, 7],
            &v21,
            &v2_255,
            &[0xc0, 0, 0, 0, 1, 0, 0],
        ];
        for datagram in cases {
            assert_eq!(parse_dcid(datagram, 8).map(|d| d.cid.len()).unwrap_or(0), 0);
            let route = steering.route(source(), datagram);
            assert_eq!(route.by, RouteBy::Source, "{datagram:02x?}");
            assert_eq!(route, steering.route(source(), datagram));
        }
        // Another version may use up to 255 bytes (RFC 8999): by its DCID.
        let mut other = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 255];
        other.extend_from_slice(&[7; 255]);
        assert_eq!(parse_dcid(&other, 8).unwrap().cid.len(), 255);
        assert_eq!(steering.route(source(), &other).by, RouteBy::DcidHash);
        // A long header ending right after its DCID still has one.
        let exact = [0xc0, 0, 0, 0, 1, 2, 0xab, 0xcd];
        assert_eq!(parse_dcid(&exact, 8).unwrap().cid, &[0xab, 0xcd]);
    }

    /// The first packet decides: a coalesced datagram whose later packets
    /// carry other shards' CIDs goes where its first packet's DCID says.
    #[test]
    fn coalesced_packets_follow_the_first() {
        let cids = ShardCids::new(4, 8).unwrap();
        let steering = QuicSteering::new(cids);
        let c1 = cids.generate(1, &[0x11; 20]);
        let c2 = cids.generate(2, &[0x22; 20]);
        // Initial + Handshake + short, as a server's peer coalesces them.
        let mut datagram = long_packet(0xc0, QUIC_V1, &c1, 30);
        datagram.extend(long_packet(0xe0, QUIC_V1, &c2, 30));
        datagram.extend(short_packet(0x40, &c2, 30));
        assert_eq!(steering.ring_for(source(), &datagram), 1);
        let mut datagram = long_packet(0xc0, QUIC_V2, &c2, 30);
        datagram.extend(short_packet(0x40, &c1, 30));
        assert_eq!(steering.ring_for(source(), &datagram), 2);
    }

    /// Client DCIDs and sources spread evenly over the shards.
    #[test]
    fn hashes_spread_evenly() {
        let mut rng = SmallRng::seed_from_u64(1);
        for shards in [2, 3, 8] {
            let steering = QuicSteering::with_key(ShardCids::new(shards, 8).unwrap(), rng.gen());
            let n = 12_000;
            let mut by_dcid = vec![0usize; shards];
            let mut by_source = vec![0usize; shards];
            for i in 0..n {
                let mut dcid = [0u8; 20];
                rng.fill(&mut dcid[..]);
                by_dcid[steering.ring_for(source(), &long_packet(0xc0, QUIC_V1, &dcid, 0))] += 1;
                // Sources that differ in the port only, as one client's
                // sockets do.
                let from = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
                by_source[steering.ring_for(from, &[])] += 1;
            }
            let mean = n / shards;
            for counts in [&by_dcid, &by_source] {
                for &c in counts.iter() {
                    assert!(c.abs_diff(mean) < mean / 10, "{counts:?}");
                }
            }
        }
    }

    fn any_source() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    /// Datagrams that look like QUIC: a first byte of either form, a v1, v2
    /// or other version, a DCID length byte, then anything.
    fn quicish() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<u8>(),
            prop_oneof![Just(QUIC_V1), Just(QUIC_V2), any::<u32>()],
            0u8..=24,
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(first, version, len, rest)| {
                let mut p = vec![first];
                p.extend_from_slice(&version.to_be_bytes());
                p.push(len);
                p.extend(rest);
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No byte string panics the parser or the steering, and the ring
        /// is always below the shard count; the same datagram from the same
        /// source always gets the same route; the fixed bit never matters;
        /// a datagram with a DCID routes the same from any source.
        #[test]
        fn no_datagram_panics_and_rings_are_in_range(
            datagram in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..1500),
                quicish(),
            ],
            shards in 1usize..=256,
            cid_len in MIN_CID_LEN..=MAX_CID_LEN,
            short_len in 0usize..=300,
            key in any::<u64>(),
            from in any_source(),
            other in any_source(),
        ) {
            let _ = parse_dcid(&datagram, short_len);
            let steering = QuicSteering::with_key(ShardCids::new(shards, cid_len).unwrap(), key);
            let route = steering.route(from, &datagram);
            prop_assert!(route.ring < shards);
            prop_assert_eq!(steering.route(from, &datagram), route);
            if let Some(&first) = datagram.first() {
                let mut flipped = datagram.clone();
                flipped[0] = first ^ 0x40;
                prop_assert_eq!(steering.route(from, &flipped), route);
            }
            if route.by != RouteBy::Source {
                prop_assert_eq!(steering.route(other, &datagram), route);
            }
            if route.by == RouteBy::ShardCid {
                let cid = parse_dcid(&datagram, cid_len).unwrap().cid;
                prop_assert_eq!(steering.cids().shard_of(cid), Some(route.ring));
            }
        }

        /// Any shard count and length: what shard k makes is shard k's.
        #[test]
        fn generate_then_shard_of(
            shards in 1usize..=256,
            cid_len in MIN_CID_LEN..=MAX_CID_LEN,
            shard_seed in any::<usize>(),
            random in any::<[u8; 20]>(),
            first in any::<u8>(),
        ) {
            let cids = ShardCids::new(shards, cid_len).unwrap();
            let shard = shard_seed % shards;
            let cid = cids.generate(shard, &random);
            prop_assert_eq!(cids.shard_of(&cid), Some(shard));
            let steering = QuicSteering::new(cids);
            let p = short_packet(first, &cid, 3);
            prop_assert_eq!(steering.ring_for(source(), &p), shard);
        }
    }

    /// Runs a classic-BPF program as the kernel runs a reuseport program
    /// (the UDP payload from offset 0, a load past the end returns 0), for
    /// the instructions `reuseport_program` uses.
    fn run_cbpf(program: &[libc::sock_filter], packet: &[u8]) -> u32 {
        use libc::{
            BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD,
            BPF_LEN, BPF_MISC, BPF_MOD, BPF_RET, BPF_RSH, BPF_TAX, BPF_TXA, BPF_W,
        };
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            let k = i.k as usize;
            match u32::from(i.code) {
                c if c == BPF_LD | BPF_W | BPF_LEN => a = packet.len() as u32,
                c if c == BPF_LD | BPF_B | BPF_ABS => match packet.get(k) {
                    Some(&b) => a = b.into(),
                    None => return 0,
                },
                c if c == BPF_LD | BPF_W | BPF_ABS => match packet.get(k..k + 4) {
                    Some(w) => a = u32::from_be_bytes(w.try_into().unwrap()),
                    None => return 0,
                },
                c if c == BPF_MISC | BPF_TAX => x = a,
                c if c == BPF_MISC | BPF_TXA => a = x,
                c if c == BPF_ALU | BPF_RSH | BPF_K => a >>= i.k,
                c if c == BPF_ALU | BPF_MOD | BPF_K => a %= i.k,
                c if c == BPF_JMP | BPF_JSET | BPF_K => pc += jump(a & i.k != 0),
                c if c == BPF_JMP | BPF_JEQ | BPF_K => pc += jump(a == i.k),
                c if c == BPF_JMP | BPF_JGE | BPF_K => pc += jump(a >= i.k),
                c if c == BPF_RET | BPF_A => return a,
                c if c == BPF_RET | BPF_K => return i.k,
                c => panic!("instruction {c:#x} is not modelled"),
            }
        }
    }

    /// What the kernel does with the program's result for a group of
    /// `shards` sockets: `None` is its own 4-tuple hash.
    fn kernel_socket(cids: ShardCids, datagram: &[u8]) -> Option<usize> {
        let index = run_cbpf(&cids.reuseport_program(), datagram) as usize;
        (index < cids.shards()).then_some(index)
    }

    /// The kernel program on the recorded quinn packets: the server's CID
    /// to its shard (short and long headers, fixed bit set and cleared),
    /// the client's Initial by its DCID's first four bytes.
    #[test]
    fn the_kernel_program_on_quinn_client_packets() {
        let initial = hex(
            "c000000001 14 23c67e4e4847a19e8e4551d4a90dc3f9944c8149 08 6d6c0b7502159180 00 448a",
        );
        let long_to_server = hex("89 00000001 08 1403c28e6a5cfc92 08 6d6c0b7502159180 00 4017");
        let short_set = hex("56 1403c28e6a5cfc92 14c70ae0224148cbb77bd300");
        let short_cleared = hex("23 1403c28e6a5cfc92 b0531f9bd4db1dd0c0c35758");
        for shards in [4, 5, 8, 256] {
            let cids = ShardCids::new(shards, 8).unwrap();
            for p in [&long_to_server, &short_set, &short_cleared] {
                assert_eq!(kernel_socket(cids, p), Some(3), "{shards} shards");
            }
            let by_dcid = 0x23c6_7e4e % shards as u32;
            assert_eq!(kernel_socket(cids, &initial), Some(by_dcid as usize));
        }
        // Shard 3 of 3 does not exist: the kernel's hash.
        let three = ShardCids::new(3, 8).unwrap();
        assert_eq!(kernel_socket(three, &short_set), None);
        assert_eq!(kernel_socket(three, &long_to_server), Some(0x1403_c28e % 3));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The kernel program agrees with `QuicSteering` wherever a shard
        /// CID decides; elsewhere a short header goes by the kernel's hash,
        /// a long one by its DCID's first four bytes (if it has ten bytes),
        /// whatever its source.
        #[test]
        fn the_kernel_program_agrees_with_steering(
            datagram in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..80),
                quicish(),
            ],
            shards in 1usize..=256,
            cid_len in MIN_CID_LEN..=MAX_CID_LEN,
            shard_seed in any::<usize>(),
            random in any::<[u8; 20]>(),
            form in 0u8..3,
            shard_byte in prop::option::of(any::<u8>()),
            cut in prop::option::of(0usize..40),
        ) {
            let cids = ShardCids::new(shards, cid_len).unwrap();
            // Two thirds of the cases carry a CID of the server's length
            // and config, of a shard or of any shard byte, some of them
            // cut short around their DCID's end.
            let mut datagram = datagram;
            if form > 0 {
                let mut cid = cids.generate(shard_seed % shards, &random).to_vec();
                if let Some(byte) = shard_byte {
                    cid[1] = byte;
                }
                datagram = if form == 1 {
                    short_packet(datagram.first().map_or(0x40, |f| f & 0x7f), &cid, datagram.len())
                } else {
                    long_packet(0xc0, QUIC_V1, &cid, datagram.len())
                };
                if let Some(cut) = cut {
                    datagram.truncate(cut);
                }
            }
            let route = QuicSteering::new(cids).route(source(), &datagram);
            let kernel = kernel_socket(cids, &datagram);
            if route.by == RouteBy::ShardCid {
                prop_assert_eq!(kernel, Some(route.ring));
            } else if datagram.first().is_some_and(|f| f & 0x80 == 0) {
                prop_assert_eq!(kernel, None);
            } else if datagram.len() < 10 {
                // Nothing to hash: the kernel's hash (an empty one: 0).
                prop_assert_eq!(kernel, if datagram.is_empty() { Some(0) } else { None });
            } else {
                // By the four bytes at 6.
                let word = u32::from_be_bytes(datagram[6..10].try_into().unwrap());
                prop_assert_eq!(kernel, Some((word % shards as u32) as usize));
            }
        }
    }
}
