//! Cipher suites 3 and 17: RAKP HMACs, key derivation (IPMI v2.0 §13.31–13.32), integrity AuthCodes
//! (§13.28.4) and AES-CBC-128 confidentiality with the IPMI pad (§13.29).

use crate::Error;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The two cipher suites worth using (the others have no or broken confidentiality/integrity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

/// Authentication algorithm numbers (IPMI v2.0 table 13-17).
pub const AUTH_RAKP_HMAC_SHA1: u8 = 0x01;
pub const AUTH_RAKP_HMAC_SHA256: u8 = 0x03;
/// Integrity algorithm numbers (table 13-18).
pub const INTEGRITY_HMAC_SHA1_96: u8 = 0x01;
pub const INTEGRITY_HMAC_SHA256_128: u8 = 0x04;
/// Confidentiality algorithm numbers (table 13-19).
pub const CONFIDENTIALITY_AES_CBC_128: u8 = 0x01;

impl CipherSuite {
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    pub fn auth_algorithm(self) -> u8 {
        match self {
            CipherSuite::Suite3 => AUTH_RAKP_HMAC_SHA1,
            CipherSuite::Suite17 => AUTH_RAKP_HMAC_SHA256,
        }
    }

    pub fn integrity_algorithm(self) -> u8 {
        match self {
            CipherSuite::Suite3 => INTEGRITY_HMAC_SHA1_96,
            CipherSuite::Suite17 => INTEGRITY_HMAC_SHA256_128,
        }
    }

    pub fn confidentiality_algorithm(self) -> u8 {
        CONFIDENTIALITY_AES_CBC_128
    }

    /// Length of the RAKP2/RAKP3 key exchange authentication codes (the full HMAC).
    pub fn rakp_hmac_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 20,
            CipherSuite::Suite17 => 32,
        }
    }

    /// Length of the RAKP4 integrity check value and of each packet's AuthCode (truncated HMAC).
    pub fn icv_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// HMAC with the suite's hash over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            // HMAC accepts keys of any length; this cannot fail.
            let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            for part in parts {
                mac.update(part);
            }
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        }
        match self {
            CipherSuite::Suite3 => run::<Hmac<Sha1>>(key, parts),
            CipherSuite::Suite17 => run::<Hmac<Sha256>>(key, parts),
        }
    }
}

/// Equal without an early exit, so a forged code cannot be found byte by byte through timing.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The inputs of the RAKP exchange both sides know after RAKP 2.
#[derive(Clone)]
pub struct RakpContext<'a> {
    pub suite: CipherSuite,
    /// SIDm: the remote console's (our) session ID.
    pub console_session_id: u32,
    /// SIDc: the managed system's (BMC's) session ID.
    pub bmc_session_id: u32,
    /// Rm: the console's random number (RAKP 1).
    pub console_random: [u8; 16],
    /// Rc: the BMC's random number (RAKP 2).
    pub bmc_random: [u8; 16],
    /// GUIDc: the BMC's GUID (RAKP 2).
    pub bmc_guid: [u8; 16],
    /// The whole requested-role byte of RAKP 1 (role | name-only-lookup bit).
    pub role: u8,
    pub username: &'a [u8],
}

impl RakpContext<'_> {
    /// RAKP 2 key exchange authentication code: HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp2_auth_code(&self, kuid: &[u8]) -> Zeroizing<Vec<u8>> {
        self.suite.hmac(
            kuid,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// RAKP 3 key exchange authentication code: HMAC_Kuid(Rc, SIDm, ROLEm, ULENGTHm, UNAMEm).
    pub fn rakp3_auth_code(&self, kuid: &[u8]) -> Zeroizing<Vec<u8>> {
        self.suite.hmac(
            kuid,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// Session integrity key: HMAC_Kg(Rm, Rc, ROLEm, ULENGTHm, UNAMEm); Kg is Kuid when the BMC has no key.
    pub fn sik(&self, kg: &[u8]) -> Zeroizing<Vec<u8>> {
        self.suite.hmac(
            kg,
            &[
                &self.console_random,
                &self.bmc_random,
                &[self.role, self.username.len() as u8],
                self.username,
            ],
        )
    }

    /// RAKP 4 integrity check value: HMAC_SIK(Rm, SIDc, GUIDc), truncated to the suite's ICV length.
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let full = self.suite.hmac(
            sik,
            &[
                &self.console_random,
                &self.bmc_session_id.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        full[..self.suite.icv_len()].to_vec()
    }
}

/// The established session's keys: K1 for integrity, the first 16 bytes of K2 for AES.
#[derive(Clone)]
pub struct SessionKeys {
    suite: CipherSuite,
    k1: Zeroizing<Vec<u8>>,
    aes_key: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKeys({:?}, <redacted>)", self.suite)
    }
}

impl SessionKeys {
    /// K1 = HMAC_SIK(0x01 × 20), K2 = HMAC_SIK(0x02 × 20) (§13.32; the constants are 20 bytes for
    /// every suite, as ipmitool and OpenBMC do).
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> Self {
        let k1 = suite.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(sik, &[&[0x02; 20]]);
        let mut aes_key = Zeroizing::new([0u8; 16]);
        aes_key.copy_from_slice(&k2[..16]);
        SessionKeys { suite, k1, aes_key }
    }

    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    #[cfg(test)]
    pub(crate) fn k1(&self) -> &[u8] {
        &self.k1
    }

    #[cfg(test)]
    pub(crate) fn aes_key(&self) -> &[u8] {
        &self.aes_key[..]
    }

    /// The packet AuthCode over AuthType..Next Header.
    pub fn auth_code(&self, integrity_data: &[u8]) -> Vec<u8> {
        self.suite.hmac(&self.k1, &[integrity_data])[..self.suite.icv_len()].to_vec()
    }

    pub fn verify_auth_code(&self, integrity_data: &[u8], auth_code: &[u8]) -> bool {
        ct_eq(&self.auth_code(integrity_data), auth_code)
    }

    /// IV ‖ AES-CBC-128(plain ‖ 1,2,..,n ‖ n), n making the whole a multiple of 16.
    pub fn encrypt(&self, plain: &[u8], iv: [u8; 16]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut out = Vec::with_capacity(16 + plain.len() + pad + 1);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plain);
        out.extend((1..=pad).map(|i| i as u8));
        out.push(pad as u8);
        let mut enc = cbc::Encryptor::<aes::Aes128>::new(&(*self.aes_key).into(), &iv.into());
        for block in out[16..].chunks_exact_mut(16) {
            let block: &mut [u8; 16] = block.try_into().expect("chunks_exact yields 16 bytes");
            enc.encrypt_block(block.into());
        }
        out
    }

    /// The inverse of [`encrypt`](Self::encrypt); checks the IPMI pad.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        const WHAT: &str = "AES-CBC-128 payload";
        if data.len() < 32 {
            return Err(Error::truncated(WHAT, 32, data.len()));
        }
        if !data.len().is_multiple_of(16) {
            return Err(Error::malformed(
                WHAT,
                format!("{} bytes is not a whole number of blocks", data.len()),
            ));
        }
        let iv: [u8; 16] = data[..16].try_into().expect("length checked above");
        let mut plain = data[16..].to_vec();
        let mut dec = cbc::Decryptor::<aes::Aes128>::new(&(*self.aes_key).into(), &iv.into());
        for block in plain.chunks_exact_mut(16) {
            let block: &mut [u8; 16] = block.try_into().expect("chunks_exact yields 16 bytes");
            dec.decrypt_block(block.into());
        }
        let pad = usize::from(*plain.last().expect("at least one block"));
        if pad > 15 || pad + 1 > plain.len() {
            return Err(Error::malformed(WHAT, format!("pad length {pad}")));
        }
        let body_len = plain.len() - pad - 1;
        let pad_ok = plain[body_len..body_len + pad]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1);
        if !pad_ok {
            return Err(Error::malformed(WHAT, "pad bytes are not 1, 2, 3, ..."));
        }
        plain.truncate(body_len);
        Ok(plain)
    }
}

/// Fills `buf` from the OS random source.
pub(crate) fn random(buf: &mut [u8]) {
    // The OS RNG failing is not something a BMC session can recover from; getrandom documents it as
    // practically impossible on Linux after boot.
    getrandom::fill(buf).expect("OS random number generator failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 2202 / RFC 4231 test case 2: the HMAC plumbing for both hashes.
    #[test]
    fn hmac_known_answers() {
        let sha1 = CipherSuite::Suite3.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(*sha1, hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
        let sha256 = CipherSuite::Suite17.hmac(b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(
            *sha256,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    /// AES-128 known answer (FIPS-197 appendix C.1) through our CBC with a zero IV and one block.
    #[test]
    fn aes_known_answer_and_pad() {
        let keys = SessionKeys {
            suite: CipherSuite::Suite3,
            k1: Zeroizing::new(vec![0; 20]),
            aes_key: Zeroizing::new(hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap()),
        };
        // 15 bytes of data + pad length 0 = one block; the plaintext block is 00..0e ‖ 00.
        let plain: Vec<u8> = (0u8..15).map(|i| i * 0x11).collect();
        let out = keys.encrypt(&plain, [0; 16]);
        assert_eq!(out.len(), 32);
        let mut block = plain.clone();
        block.push(0);
        assert_eq!(block, hex("00112233445566778899aabbccddee00"));
        // Cross-check with a single ECB block of the same input (CBC with zero IV is ECB for one block).
        let mut expect = [0u8; 16];
        expect.copy_from_slice(&block);
        {
            use aes::cipher::BlockCipherEncrypt;
            let aes = aes::Aes128::new(&(*keys.aes_key).into());
            aes.encrypt_block((&mut expect).into());
        }
        assert_eq!(&out[16..], &expect);
        assert_eq!(keys.decrypt(&out).unwrap(), plain);

        // Pad shape: 3 bytes → 3 ‖ 1..12 ‖ 12.
        let out = keys.encrypt(&[9, 9, 9], [7; 16]);
        assert_eq!(out.len(), 32);
        assert_eq!(&out[..16], &[7; 16]);
        assert_eq!(keys.decrypt(&out).unwrap(), vec![9, 9, 9]);
        // Empty payload still makes one block.
        assert_eq!(
            keys.decrypt(&keys.encrypt(&[], [1; 16])).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn decrypt_rejects_garbage() {
        let keys = SessionKeys::derive(CipherSuite::Suite17, &[5; 32]);
        assert!(keys.decrypt(&[0; 16]).is_err());
        assert!(keys.decrypt(&[0; 33]).is_err());
        // Random blocks almost never decrypt to a valid IPMI pad; this one does not.
        let mut tampered = keys.encrypt(b"hello", [3; 16]);
        tampered[20] ^= 0x55;
        let r = keys.decrypt(&tampered);
        assert!(r.is_err() || r.unwrap() != b"hello");
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
