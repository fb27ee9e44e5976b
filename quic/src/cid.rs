//! A quinn connection ID generator whose CIDs name their shard, for a
//! server that runs one quinn endpoint per shard behind listeners steering
//! by [`mpring::udp::steer::QuicSteering`].
//!
//! Each shard's endpoint gets its own generator ([`ShardCidGenerator`]),
//! built on the same [`ShardCids`] encoding as the listeners' steering:
//! every CID it issues carries its shard index (see the encoding, and its
//! trade-off against an encrypted one, in [`mpring::udp::steer`]), so every
//! later packet of the connection reaches the same endpoint, whatever
//! address it comes from. Its
//! [`validate`](quinn::ConnectionIdGenerator::validate) rejects other
//! shards' CIDs: quinn drops a short-header packet whose CID fails it
//! instead of answering with a stateless reset, so a packet that reached the
//! wrong endpoint never draws a reset for a connection another shard owns.
//!
//! ```
//! use mpring::udp::steer::ShardCids;
//! use mpring_quic::ShardCidGenerator;
//!
//! let cids = ShardCids::new(4, 8)?;
//! let mut config = quinn::EndpointConfig::default();
//! config.cid_generator(ShardCidGenerator::factory(cids, 2)?);
//! # Ok::<(), mpring::udp::steer::ShardCidsError>(())
//! ```

use std::fmt;
use std::time::Duration;

use mpring::udp::steer::{ShardCids, ShardCidsError, MAX_CID_LEN};
use quinn::{ConnectionId, ConnectionIdGenerator};
use quinn_proto::InvalidCid;
use rustls::crypto::SecureRandom;

/// Makes the connection IDs of one shard: [`ShardCids::generate`] with
/// fresh random bytes from rustls' ring provider (the system's secure
/// random source) for every CID.
///
/// ```
/// use mpring::udp::steer::ShardCids;
/// use mpring_quic::ShardCidGenerator;
/// use quinn::ConnectionIdGenerator;
///
/// let cids = ShardCids::new(4, 8)?;
/// let mut generator = ShardCidGenerator::new(cids, 3)?;
/// let cid = generator.generate_cid();
/// assert_eq!(cid.len(), 8);
/// assert_eq!(cids.shard_of(&cid), Some(3));
/// assert!(generator.validate(&cid).is_ok());
/// // Shard 1's CIDs are not shard 3's.
/// let other = ShardCidGenerator::new(cids, 1)?.generate_cid();
/// assert!(generator.validate(&other).is_err());
/// # Ok::<(), mpring::udp::steer::ShardCidsError>(())
/// ```
pub struct ShardCidGenerator {
    cids: ShardCids,
    shard: usize,
    lifetime: Option<Duration>,
    random: &'static dyn SecureRandom,
}

impl ShardCidGenerator {
    /// The generator of shard `shard` of `cids` (a typed error if `shard`
    /// is not below the shard count). Its CIDs live as long as their
    /// connection.
    pub fn new(cids: ShardCids, shard: usize) -> Result<ShardCidGenerator, ShardCidsError> {
        cids.check_shard(shard)?;
        Ok(ShardCidGenerator {
            cids,
            shard,
            lifetime: None,
            random: rustls::crypto::ring::default_provider().secure_random,
        })
    }

    /// Retire CIDs after `lifetime` (quinn then issues fresh ones, of the
    /// same shard).
    pub fn set_lifetime(&mut self, lifetime: Duration) -> &mut Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// A factory for [`quinn::EndpointConfig::cid_generator`]: every
    /// endpoint config of shard `shard` gets a generator of that shard.
    /// Checks `shard` once, here.
    pub fn factory(
        cids: ShardCids,
        shard: usize,
    ) -> Result<impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync + 'static, ShardCidsError>
    {
        ShardCidGenerator::new(cids, shard)?;
        Ok(move || -> Box<dyn ConnectionIdGenerator> {
            Box::new(ShardCidGenerator::new(cids, shard).expect("checked above"))
        })
    }

    /// The encoding.
    pub fn cids(&self) -> ShardCids {
        self.cids
    }

    /// The shard whose CIDs it makes.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl ConnectionIdGenerator for ShardCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut random = [0u8; MAX_CID_LEN];
        // quinn's own generators panic too when the system has no entropy.
        self.random
            .fill(&mut random)
            .expect("the system's secure random source");
        ConnectionId::new(&self.cids.generate(self.shard, &random))
    }

    /// Only this shard's CIDs pass: the server's length, the encoding's
    /// config bits, this shard's index.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match self.cids.shard_of(cid) {
            Some(shard) if shard == self.shard => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        self.cids.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

impl fmt::Debug for ShardCidGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardCidGenerator")
            .field("cids", &self.cids)
            .field("shard", &self.shard)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}
