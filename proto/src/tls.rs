//! TLS for the edge ↔ core hop: TLS 1.3 only, ALPN `chorus/1`, and **mutual** authentication —
//! the core accepts only clients whose certificate chains to the region CA, and the edge
//! accepts only a core whose certificate does. Certificates come from PEM files; [`mint_dev`]
//! makes a development CA and certificates for local runs (`chorus certs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{path}: holds no certificate")]
    NoCert { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("minting certificates: {0}")]
    Mint(#[from] rcgen::Error),
}

/// PEM files for one side of the hop.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The region CA: peers must chain to it.
    pub ca: PathBuf,
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

/// Certificates and key in DER.
#[derive(Debug)]
pub struct Identity {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self { ca: self.ca.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Reads PEM files.
    pub fn load(f: &TlsFiles) -> Result<Self, TlsError> {
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            let v = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::File { path: path.into(), why: e.to_string() })?;
            if v.is_empty() {
                return Err(TlsError::NoCert { path: path.into() });
            }
            Ok(v)
        };
        let key = PrivateKeyDer::from_pem_file(&f.key)
            .map_err(|e| TlsError::File { path: f.key.clone(), why: e.to_string() })?;
        Ok(Self { ca: certs(&f.ca)?, chain: certs(&f.cert)?, key })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The core's QUIC server configuration: client certificates required and checked against
/// the CA.
pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let p = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(id.roots()?, p.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport()));
    Ok(cfg)
}

/// An edge's QUIC client configuration: presents its certificate, trusts only the CA.
pub fn client_config(id: &Identity) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(id.roots()?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport()));
    Ok(cfg)
}

/// Room for many concurrent request streams per connection, and keep-alives so an idle
/// edge ↔ core connection survives NAT and idle timeouts.
fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1024u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    t.max_idle_timeout(Some(std::time::Duration::from_secs(30).try_into().expect("30 s is a valid idle timeout")));
    t
}

/// A development PKI: a CA, a core certificate for `core_names`, and an edge client
/// certificate. PEM strings.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_cert: String,
    pub ca_key: String,
    pub core_cert: String,
    pub core_key: String,
    pub edge_cert: String,
    pub edge_key: String,
}

/// Mints a development CA and core and edge certificates signed by it.
pub fn mint_dev(ca_name: &str, core_names: &[String]) -> Result<DevPki, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let named = |cn: &str, sans: Vec<String>| -> Result<CertificateParams, rcgen::Error> {
        let mut p = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        Ok(p)
    };
    let mut ca = named(ca_name, vec![])?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut core = named("chorus-core", core_names.to_vec())?;
    core.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let core_key = KeyPair::generate()?;
    let core_cert = core.signed_by(&core_key, &issuer)?;

    let mut edge = named("chorus-edge", vec!["chorus-edge".into()])?;
    edge.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let edge_key = KeyPair::generate()?;
    let edge_cert = edge.signed_by(&edge_key, &issuer)?;

    Ok(DevPki {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        core_cert: core_cert.pem(),
        core_key: core_key.serialize_pem(),
        edge_cert: edge_cert.pem(),
        edge_key: edge_key.serialize_pem(),
    })
}

impl DevPki {
    /// Writes `ca.pem ca.key core.pem core.key edge.pem edge.key` into `dir` (keys mode 0600)
    /// and returns the core's and the edge's file sets.
    pub fn write(&self, dir: &Path) -> std::io::Result<(TlsFiles, TlsFiles)> {
        std::fs::create_dir_all(dir)?;
        for (name, body, secret) in [
            ("ca.pem", &self.ca_cert, false),
            ("ca.key", &self.ca_key, true),
            ("core.pem", &self.core_cert, false),
            ("core.key", &self.core_key, true),
            ("edge.pem", &self.edge_cert, false),
            ("edge.key", &self.edge_key, true),
        ] {
            let path = dir.join(name);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            if secret {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            #[cfg(not(unix))]
            let _ = secret;
            std::io::Write::write_all(&mut opts.open(&path)?, body.as_bytes())?;
        }
        let files = |who: &str| TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{who}.pem")),
            key: dir.join(format!("{who}.key")),
        };
        Ok((files("core"), files("edge")))
    }

    /// The core's identity, without touching the disk.
    pub fn core_identity(&self) -> Result<Identity, TlsError> {
        Self::identity(&self.ca_cert, &self.core_cert, &self.core_key)
    }

    /// The edge's identity, without touching the disk.
    pub fn edge_identity(&self) -> Result<Identity, TlsError> {
        Self::identity(&self.ca_cert, &self.edge_cert, &self.edge_key)
    }

    fn identity(ca: &str, cert: &str, key: &str) -> Result<Identity, TlsError> {
        let certs = |pem: &str| {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Config(e.to_string()))
        };
        Ok(Identity {
            ca: certs(ca)?,
            chain: certs(cert)?,
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::Config(e.to_string()))?,
        })
    }
}

/// Which end of the hop a development identity is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Core,
    Edge,
}

impl Side {
    fn stem(self) -> &'static str {
        match self {
            Side::Core => "core",
            Side::Edge => "edge",
        }
    }
}

/// Where development certificates live when none are configured, shared by the edge and the
/// core on one machine: `$CHORUS_HOME/certs`, else `$XDG_CACHE_HOME/chorus/certs`, else
/// `~/.cache/chorus/certs`. An empty variable counts as unset (as for the model cache).
pub fn dev_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = var("CHORUS_HOME") {
        return home.join("certs");
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache"))).unwrap_or_else(|| ".".into());
    base.join("chorus").join("certs")
}

/// `side`'s identity from the development PKI in `dir`, minting the PKI there first when it
/// is missing (for `localhost` and `127.0.0.1`). The flag says whether it was minted now.
pub fn dev_identity(dir: &Path, side: Side) -> Result<(Identity, bool), TlsError> {
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{}.pem", side.stem())),
        key: dir.join(format!("{}.key", side.stem())),
    };
    let minted = !files.key.exists();
    if minted {
        let pki = mint_dev("chorus dev CA", &["localhost".into(), "127.0.0.1".into()])?;
        pki.write(dir).map_err(|e| TlsError::File { path: dir.into(), why: e.to_string() })?;
    }
    Ok((Identity::load(&files)?, minted))
}
