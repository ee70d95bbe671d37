//! Between oci-spec's digests (any algorithm, as documents carry them) and racker's
//! [`Digest`] (sha256 only, as the store names blobs): a conversion, never a detour
//! through text at the call site.

use oci_spec::image::{Digest as OciDigest, DigestAlgorithm, Sha256Digest};

use crate::digest::{Digest, DigestError};

/// A document's digest as the store names it: only sha256 is accepted, and the error
/// quotes the digest as the document gave it.
impl TryFrom<&OciDigest> for Digest {
    type Error = DigestError;
    fn try_from(digest: &OciDigest) -> Result<Self, DigestError> {
        match digest.algorithm() {
            DigestAlgorithm::Sha256 => Digest::from_hex(digest.digest()),
            _ => Err(DigestError::Invalid(digest.to_string())),
        }
        .map_err(|_| DigestError::Invalid(digest.to_string()))
    }
}

/// A store digest in a document racker writes (a synthesised manifest's descriptors).
impl From<&Digest> for OciDigest {
    fn from(digest: &Digest) -> Self {
        // A racker digest is 64 lowercase hex digits, which is all oci-spec checks.
        let sha256: Sha256Digest = digest.hex().parse().expect("a racker digest is a valid sha256 digest for oci-spec");
        sha256.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways() {
        let ours = Digest::of(b"racker");
        let theirs = OciDigest::from(&ours);
        assert_eq!(theirs.to_string(), ours.to_string());
        assert_eq!(Digest::try_from(&theirs), Ok(ours));
    }

    #[test]
    fn refuses_other_algorithms_quoting_the_digest() {
        let text = format!("sha512:{}", "a".repeat(128));
        let theirs: OciDigest = text.parse().expect("a valid sha512 digest");
        assert_eq!(Digest::try_from(&theirs), Err(DigestError::Invalid(text)));
    }
}
