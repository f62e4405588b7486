//! Discovering and verifying the policy a strong address demands (mesh-formats.md §3).
//!
//! The two kinds of address have chains that never cross:
//! - UDF address: local store → DNS TXT `<24 chars>._mmm.<domain>` → HTTPS
//!   `https://<domain>/.well-known/mmm-udf/<24 chars>`;
//! - OpenPGP-fingerprint address: local keyring → DNS OPENPGPKEY → WKD (advanced, then direct).
//!
//! Outcome rules: the newest valid policy (by `created`) among all answers wins, and none older
//! than one already stored is accepted (no rollback). The answer is a permanent "no valid
//! policy" only when every source answered definitively; if any failed transiently and nothing
//! valid was found, it is temporary, so that mail is retried rather than refused.

use super::cache::PolicyCache;
use super::dns::{Answer, DnsClient};
use super::https::{HttpsClient, HttpsSetupError};
use super::store::{LocalStore, StoredPolicy};
use super::verify::{verify_certificate, verify_policy, PolicyRefusal, Source, Verified};
use crate::address::{Fingerprint, StrongAddress, Udf};
use crate::crypto::openpgp;
use aws_lc_rs::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
use sequoia_openpgp::Cert;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;
use time::OffsetDateTime;

/// Largest policy file fetched over HTTPS.
const MAX_POLICY_BODY: usize = 16 * 1024;
/// Largest WKD certificate fetched.
const MAX_WKD_BODY: usize = 256 * 1024;

/// Why no policy could be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveFailure {
    /// Every source answered and none holds a valid policy: `550 5.7.1`, exit 65.
    #[error("no valid policy: {0}")]
    NoValidPolicy(String),
    /// A source failed transiently and nothing valid was found: `451 4.4.3`, exit 75.
    #[error("policy lookup failed temporarily: {0}")]
    Temporary(String),
}

/// Settings for discovery (from the `[policy]` section or the command line).
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// DNS server to ask instead of the system's resolvers.
    pub dns: Option<SocketAddr>,
    /// Extra CA for HTTPS policy and WKD fetches.
    pub https_ca: Option<PathBuf>,
    /// Test-only: the port of HTTPS fetches (443 otherwise).
    pub https_port: Option<u16>,
    /// Timeout of each DNS query and HTTPS request.
    pub timeout: Duration,
    /// Key store whose local policy store and keyring are used (none: network only).
    pub home: Option<PathBuf>,
    /// How long a stored policy is used before it is refreshed.
    pub store_ttl: Duration,
    /// How long a lookup that failed for now is answered from the cache (at most 60 s).
    pub retry_after: Duration,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        ResolverSettings {
            dns: None,
            https_ca: None,
            https_port: None,
            timeout: Duration::from_secs(5),
            home: None,
            store_ttl: Duration::from_secs(3600),
            retry_after: super::cache::TRANSIENT_TTL,
        }
    }
}

/// Finds and verifies policies. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct PolicyResolver {
    dns: DnsClient,
    https: HttpsClient,
    store: Option<LocalStore>,
    store_ttl: Duration,
    cache: PolicyCache,
    plain_cache: moka::sync::Cache<String, Result<Option<Cert>, ResolveFailure>>,
}

/// Everything the sources said, gathered before deciding.
#[derive(Default)]
struct Findings {
    valid: Vec<Verified>,
    refusals: Vec<String>,
    transient: Vec<String>,
}

impl Findings {
    fn refused(&mut self, source: &str, why: impl std::fmt::Display) {
        self.refusals.push(format!("{source}: {why}"));
    }
}

impl PolicyResolver {
    pub fn new(settings: &ResolverSettings) -> Result<PolicyResolver, HttpsSetupError> {
        let dns =
            DnsClient::new(settings.dns, settings.timeout).map_err(HttpsSetupError::Client)?;
        let https = HttpsClient::new(
            dns.clone(),
            settings.https_ca.as_deref(),
            settings.https_port,
            settings.timeout,
        )?;
        Ok(PolicyResolver {
            dns,
            https,
            store: settings.home.as_deref().map(LocalStore::new),
            store_ttl: settings.store_ttl,
            cache: PolicyCache::new(super::cache::CAPACITY, settings.retry_after),
            plain_cache: moka::sync::Cache::builder()
                .max_capacity(super::cache::CAPACITY)
                .time_to_live(settings.retry_after.min(super::cache::TRANSIENT_TTL))
                .build(),
        })
    }

    /// The verified policy for `address`, or why there is none.
    pub async fn resolve(&self, address: &StrongAddress) -> Result<Verified, ResolveFailure> {
        let key = cache_key(address);
        if let Some(hit) = self.cache.get(&key) {
            return hit;
        }
        let outcome = match address.fingerprint() {
            Fingerprint::Udf(udf) => self.resolve_udf(address, udf).await,
            Fingerprint::OpenPgpV4(f) => self.resolve_cert(address, f).await,
            Fingerprint::OpenPgpV6(f) => self.resolve_cert(address, f).await,
        };
        self.cache.insert(key, outcome.clone());
        outcome
    }

    async fn resolve_udf(
        &self,
        address: &StrongAddress,
        udf: &Udf,
    ) -> Result<Verified, ResolveFailure> {
        let now = OffsetDateTime::now_utc();
        let mut found = Findings::default();
        let mut floor: Option<OffsetDateTime> = None;

        let routable = address.routable();
        if let Some(stored) = self
            .store
            .as_ref()
            .and_then(|s| s.load_policy(udf, &routable))
        {
            floor = Some(stored.created);
            match verify_policy(&stored.jws, address, Source::Store, now) {
                Ok(v) => {
                    let fresh = (now - stored.fetched) < self.store_ttl;
                    if fresh {
                        return Ok(v);
                    }
                    found.valid.push(v);
                }
                Err(e) => found.refused("local store", e),
            }
        }

        // DNS and HTTPS are asked at once, and the newest valid policy of either wins: a stale
        // DNS record (a TTL, a host that caps TXT size) cannot hide a newer file, nor the other
        // way round.
        let name = format!("{}._mmm.{}", udf.dns_label(), address.domain());
        let path = format!("/.well-known/mmm-udf/{}", udf.well_known_name());
        let (dns, https) = tokio::join!(
            self.dns.txt(&name),
            self.https.get(address.domain(), &path, MAX_POLICY_BODY)
        );
        match dns {
            Answer::Found(records) => {
                for jws in records {
                    match verify_policy(&jws, address, Source::Dns, now) {
                        Ok(v) => found.valid.push(v),
                        Err(e) => found.refused("DNS", e),
                    }
                }
            }
            Answer::Nothing => found.refused("DNS", "no policy record"),
            Answer::Transient(why) => found.transient.push(why),
        }
        match https {
            Answer::Found(body) => match String::from_utf8(body) {
                Ok(jws) => match verify_policy(&jws, address, Source::Https, now) {
                    Ok(v) => found.valid.push(v),
                    Err(e) => found.refused("HTTPS", e),
                },
                Err(_) => found.refused("HTTPS", "policy file is not text"),
            },
            Answer::Nothing => found.refused("HTTPS", "no policy file"),
            Answer::Transient(why) => found.transient.push(why),
        }

        // No rollback: nothing older than the newest policy ever stored.
        if let Some(floor) = floor {
            let before = found.valid.len();
            found
                .valid
                .retain(|v| v.created().is_some_and(|c| c >= floor));
            if found.valid.len() < before {
                found.refused(
                    "policy",
                    "older than a policy already seen (rollback refused)",
                );
            }
        }
        let best = found.valid.iter().max_by_key(|v| v.created()).cloned();
        match best {
            Some(best) => {
                if let (
                    Some(store),
                    Some(created),
                    super::verify::Origin::SignedPolicy { jws, .. },
                ) = (&self.store, best.created(), best.origin())
                {
                    if best.source() != Source::Store {
                        // A file lock and an fsync: off the reactor.
                        let (store, udf) = (store.clone(), udf.clone());
                        let stored = StoredPolicy {
                            jws: jws.to_string(),
                            fetched: now,
                            created,
                        };
                        let _ = tokio::task::spawn_blocking(move || {
                            store.save_policy(&udf, &routable, &stored)
                        })
                        .await;
                    }
                }
                Ok(best)
            }
            None => Err(decide(found)),
        }
    }

    async fn resolve_cert(
        &self,
        address: &StrongAddress,
        fpr: &[u8],
    ) -> Result<Verified, ResolveFailure> {
        let now = OffsetDateTime::now_utc();
        let mut found = Findings::default();
        let mut certs: Vec<(Cert, Source)> = Vec::new();
        if let Some(store) = &self.store {
            certs.extend(store.certs_for(fpr).into_iter().map(|c| (c, Source::Store)));
        }
        let wanted = |c: &Cert| c.fingerprint().as_bytes() == fpr;
        certs.extend(
            self.fetch_openpgp(address.local_part(), address.domain(), &wanted, &mut found)
                .await,
        );

        // All copies of the certificate are merged, so a revocation published anywhere counts.
        let source = certs
            .iter()
            .map(|(_, s)| *s)
            .find(|s| *s != Source::Store)
            .unwrap_or(Source::Store);
        if let Some(cert) = merge(certs.into_iter().map(|(c, _)| c)) {
            match verify_certificate(&cert, address, source, now) {
                Ok(v) => {
                    if let Some(store) = &self.store {
                        if source != Source::Store {
                            store.save_fetched_cert(&cert);
                        }
                    }
                    found.valid.push(v)
                }
                Err(e) => found.refused("certificate", e),
            }
        }
        match found.valid.pop() {
            Some(v) => Ok(v),
            None => Err(decide(found)),
        }
    }

    /// A certificate for a plain address (no fingerprint to pin it), for local rules
    /// (`encrypt = required | opportunistic`): the local keyring, then OPENPGPKEY, then WKD; only
    /// a certificate with a user ID equal to the address and a usable encryption key counts.
    /// `Ok(None)` when every source answered and none had one.
    pub async fn resolve_plain(&self, address: &str) -> Result<Option<Cert>, ResolveFailure> {
        let key = format!("plain|{}", address.to_lowercase());
        if let Some(hit) = self.plain_cache.get(&key) {
            return hit;
        }
        let outcome = self.resolve_plain_uncached(address).await;
        self.plain_cache.insert(key, outcome.clone());
        outcome
    }

    async fn resolve_plain_uncached(&self, address: &str) -> Result<Option<Cert>, ResolveFailure> {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Ok(None);
        };
        let domain = domain.to_ascii_lowercase();
        let now = std::time::SystemTime::now();
        let wanted = |c: &Cert| openpgp::certifies_address(c, address);
        let mut found = Findings::default();
        let mut certs: Vec<Cert> = match &self.store {
            Some(store) => store.pinned_certs_matching(&wanted),
            None => Vec::new(),
        };
        if certs.is_empty() {
            certs = self
                .fetch_openpgp(local, &domain, &wanted, &mut found)
                .await
                .into_iter()
                .map(|(c, _)| c)
                .collect();
        }
        let usable = certs
            .into_iter()
            .find(|c| openpgp::check_encryptable(c, now).is_ok());
        match usable {
            Some(cert) => Ok(Some(cert)),
            None if !found.transient.is_empty() => Err(decide(found)),
            None => Ok(None),
        }
    }

    /// DNS OPENPGPKEY, then WKD (advanced, then direct): the certificates `wanted` accepts.
    async fn fetch_openpgp(
        &self,
        local: &str,
        domain: &str,
        wanted: &(dyn Fn(&Cert) -> bool + Sync),
        found: &mut Findings,
    ) -> Vec<(Cert, Source)> {
        let mut certs = Vec::new();
        let matching = |bytes: &[u8], found: &mut Findings, label: &str| -> Vec<Cert> {
            match openpgp::parse_certs(bytes) {
                Ok(list) => {
                    let (good, other): (Vec<Cert>, Vec<Cert>) =
                        list.into_iter().partition(|c| wanted(c));
                    if good.is_empty() && !other.is_empty() {
                        found.refused(label, PolicyRefusal::CertificateMismatch);
                    }
                    good
                }
                Err(e) => {
                    found.refused(label, e);
                    Vec::new()
                }
            }
        };

        let local_hash =
            data_encoding::HEXLOWER.encode(&digest(&SHA256, local.as_bytes()).as_ref()[..28]);
        let name = format!("{local_hash}._openpgpkey.{domain}");
        match self.dns.openpgpkey(&name).await {
            Answer::Found(records) => {
                for record in records {
                    certs.extend(
                        matching(&record, found, "DNS")
                            .into_iter()
                            .map(|c| (c, Source::Dns)),
                    );
                }
            }
            Answer::Nothing => found.refused("DNS", "no OPENPGPKEY record"),
            Answer::Transient(why) => found.transient.push(why),
        }
        if !certs.is_empty() {
            return certs;
        }

        let hu = wkd_hash(local);
        let l = percent_encode(local);
        let advanced_host = format!("openpgpkey.{domain}");
        let advanced = format!("/.well-known/openpgpkey/{domain}/hu/{hu}?l={l}");
        let direct = format!("/.well-known/openpgpkey/hu/{hu}?l={l}");
        for (host, path) in [(advanced_host.as_str(), advanced), (domain, direct)] {
            match self.https.get(host, &path, MAX_WKD_BODY).await {
                Answer::Found(body) => {
                    let got = matching(&body, found, "WKD");
                    let any = !got.is_empty();
                    certs.extend(got.into_iter().map(|c| (c, Source::Https)));
                    if any {
                        break;
                    }
                }
                Answer::Nothing => found.refused("WKD", format!("nothing at {host}")),
                Answer::Transient(why) => found.transient.push(why),
            }
        }
        certs
    }
}

/// Merges copies of one certificate (a failed merge keeps what was merged so far).
fn merge(certs: impl Iterator<Item = Cert>) -> Option<Cert> {
    let mut merged: Option<Cert> = None;
    for cert in certs {
        merged = Some(match merged {
            None => cert,
            Some(m) => m.clone().merge_public(cert).unwrap_or(m),
        });
    }
    merged
}

/// Permanent only when no source failed transiently.
fn decide(found: Findings) -> ResolveFailure {
    if !found.transient.is_empty() {
        return ResolveFailure::Temporary(found.transient.join("; "));
    }
    // The most telling reason first: a refused artefact beats "no record".
    let mut reasons = found.refusals;
    reasons.sort_by_key(|r| {
        r.contains("no policy record")
            || r.contains("no policy file")
            || r.contains("nothing at")
            || r.contains("no OPENPGPKEY")
    });
    if reasons.is_empty() {
        reasons.push("no policy found".into());
    }
    ResolveFailure::NoValidPolicy(reasons.join("; "))
}

fn cache_key(address: &StrongAddress) -> String {
    format!(
        "{}|{}",
        address.routable(),
        address.fingerprint().label_text()
    )
}

/// The WKD hash: z-base-32 of SHA-1 of the lower-cased local part.
pub fn wkd_hash(local: &str) -> String {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("ybndrfg8ejkmcpqxot1uwisza345h769");
    let zbase32 = match spec.encoding() {
        Ok(e) => e,
        Err(_) => return String::new(),
    };
    zbase32.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, local.to_lowercase().as_bytes()).as_ref())
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wkd_hash_matches_the_draft_example() {
        // draft-koch-openpgp-webkey-service §3.1: "Joe.Doe" -> iy9q119eutrkn8s1mk4r39qejnbu3n5q
        assert_eq!(wkd_hash("Joe.Doe"), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
    }

    #[test]
    fn permanent_only_when_every_source_answered() {
        let mut f = Findings::default();
        f.refused("DNS", "no policy record");
        f.refused("HTTPS", "policy expired");
        assert_eq!(
            decide(f),
            ResolveFailure::NoValidPolicy("HTTPS: policy expired; DNS: no policy record".into())
        );
        let mut f = Findings::default();
        f.refused("DNS", "policy expired");
        f.transient.push("HTTPS: timeout".into());
        assert!(matches!(decide(f), ResolveFailure::Temporary(_)));
    }
}
