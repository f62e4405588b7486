//! `serve` for split accounts: a device's keys and its way to the store, and the store role's
//! listeners.

use super::*;

/// A device of a split account, as `serve` loaded it.
pub(super) struct LoadedDevice {
    home: PathBuf,
    info: crate::keys::device::DeviceInfo,
    /// The device's TLS key, PKCS#8 DER.
    tls_key: crate::secret::SecretBytes,
}

/// The `[imap]` upstream; a device of a split account presents its key to the store it pins.
pub(super) fn imap_target(
    config: &Config,
    imap: &crate::config::ImapConfig,
    device: Option<&LoadedDevice>,
) -> Result<UpstreamTarget, ServeError> {
    let mut pins = crate::config::upstream_pins(imap.upstream_fingerprint.as_deref())
        .map_err(ServeError::Config)?;
    let identity = match device {
        None => None,
        Some(device) => {
            pins.push(store_pin(imap.store_cert.as_deref(), &device.info)?);
            Some(
                crate::tls::client_keys::ClientIdentity::new(
                    &device.home.join(crate::keys::device::DEVICE_CERT_FILE),
                    device.tls_key.expose(),
                )
                .map_err(ServeError::Config)?,
            )
        }
    };
    let upstream_tls =
        crate::upstream::client_config_with_identity(imap.upstream_ca.as_deref(), &pins, identity)
            .map_err(ServeError::Config)?;
    Ok(UpstreamTarget {
        address: imap.upstream.clone(),
        tls: imap.upstream_tls,
        tls_config: Arc::new(upstream_tls),
        timeout: Duration::from_secs(config.limits.upstream_timeout_secs),
        hello_name: "localhost".into(),
    })
}

/// The store as a device's command-line tools reach it (`device revoke`, `device list`): the
/// `[imap]` upstream of the device's configuration, with its key.
pub fn store_upstream(
    config: &Config,
    home: &Path,
    passphrase: Option<&SecretString>,
) -> Result<UpstreamTarget, ServeError> {
    let imap = config
        .imap
        .as_ref()
        .ok_or_else(|| ServeError::Config("no [imap] section: no store to reach".into()))?;
    let info = crate::keys::device::info(home)?
        .ok_or_else(|| ServeError::Config(format!("{} is not a device", home.display())))?;
    let secrets = crate::keys::device::unlock(home, passphrase)?;
    let device = LoadedDevice {
        home: home.to_owned(),
        info,
        tls_key: secrets.tls_key,
    };
    imap_target(config, imap, Some(&device))
}

/// The store's certificate pin for a device: `store_cert` (a `sha256:` pin or a PEM file),
/// else the pin the device got at enrolment.
fn store_pin(
    store_cert: Option<&str>,
    info: &crate::keys::device::DeviceInfo,
) -> Result<crate::upstream::CertPin, ServeError> {
    match store_cert {
        Some(pin) if pin.starts_with("sha256:") => {
            crate::upstream::parse_pin(pin).map_err(ServeError::Config)
        }
        Some(path) => {
            let certs = crate::tls::read_pem_certs(Path::new(path)).map_err(ServeError::Config)?;
            certs
                .first()
                .map(crate::upstream::pin_of)
                .ok_or_else(|| ServeError::Config(format!("{path}: no certificate")))
        }
        None => crate::upstream::parse_pin(&format!("sha256:{}", info.store.cert_sha256))
            .map_err(ServeError::Config),
    }
}

/// The store role's listeners: an IMAP proxy in front of the mail store that asks clients
/// for their TLS keys and answers enrolled devices' `X-MESH-RECRYPT`.
pub(super) fn serve_store(
    config: &Config,
    store: &crate::config::store::StoreConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
    let role = crate::store::role::StoreRole::open(store).map_err(ServeError::Config)?;
    let tls = config
        .tls
        .as_ref()
        .ok_or_else(|| ServeError::Config("[store] needs a [tls] certificate".into()))?;
    let acceptor =
        crate::tls::client_keys::acceptor(&tls.cert, &tls.key).map_err(ServeError::Config)?;
    let upstream_tls = crate::upstream::client_config(
        store.upstream_ca.as_deref(),
        &crate::config::upstream_pins(store.upstream_fingerprint.as_deref())
            .map_err(ServeError::Config)?,
    )
    .map_err(ServeError::Config)?;
    let ctx = Arc::new(crate::imap::ImapContext {
        upstream: UpstreamTarget {
            address: store.upstream.clone(),
            tls: store.upstream_tls,
            tls_config: Arc::new(upstream_tls),
            timeout: Duration::from_secs(config.limits.upstream_timeout_secs),
            hello_name: "localhost".into(),
        },
        tls: Some(acceptor),
        accounts: HashMap::new(),
        limits: config.limits.clone(),
        connections: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
        views: crate::imap::view::ViewCache::new(0),
        append_plaintext: Vec::new(),
        indexer: crate::imap::indexer::IndexerSettings {
            enabled: false,
            ..Default::default()
        },
        store: Some(Arc::new(role)),
    });
    let mut tasks = Vec::new();
    for (listener, addr, implicit) in listeners(store.listen, store.listen_implicit_tls, true)? {
        tracing::info!(%addr, implicit_tls = implicit, "store listening");
        tasks.push(tokio::spawn(crate::imap::run_listener(
            listener,
            ctx.clone(),
            implicit,
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

/// A device of a split account: its share opens mail only with the store's partials, so
/// the device's secrets must be unlocked (a locked device cannot talk to its store at all).
pub(super) fn load_device(
    a: &AccountConfig,
    account: &Account,
    info: crate::keys::device::DeviceInfo,
    passphrase: Option<&SecretString>,
) -> Result<LoadedAccount, ServeError> {
    let secrets = crate::keys::device::unlock(&a.home, passphrase)?;
    let cert = account.openpgp_cert()?;
    let signer = match &secrets.openpgp_signing {
        Some(key) => match crate::keys::device_signing::signer(&cert, key.expose()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "this device's mail goes unsigned");
                None
            }
        },
        None => None,
    };
    let keyring = crate::policy::store::LocalStore::new(&a.home).certs_matching(&|_| true);
    let index = crate::imap::index::Index::open(&a.home, secrets.index_key.expose());
    let keys = DecryptionKeys::split(cert.clone(), secrets.shares, keyring).ok_or_else(|| {
        ServeError::Config(format!(
            "{}: the certificate lacks the split subkey {}",
            a.home.display(),
            info.subkey
        ))
    })?;
    tracing::info!(user = %a.upstream_user, device = %info.name, store = %info.store.address, "device of a split account");
    Ok(LoadedAccount {
        home: a.home.clone(),
        smtp: Arc::new(MappedAccount {
            address: account.address().to_owned(),
            // Sent copies are encrypted to the account; mail is signed with the device's own
            // subkey of the account, when it has one.
            keys: Some(SenderKeys {
                self_openpgp: Some(cert),
                self_smime: None,
                signer: signer.clone(),
            }),
        }),
        imap: Arc::new(ImapAccount {
            address: account.address().to_owned(),
            keys: Some(Arc::new(keys)),
            index,
            owned: Default::default(),
            indexer: Default::default(),
            device: Some(info.name.clone()),
            device_signer: signer.clone().map(Arc::new),
        }),
        pop3_sizes: None,
        device: Some(LoadedDevice {
            home: a.home.clone(),
            info,
            tls_key: secrets.tls_key,
        }),
    })
}
