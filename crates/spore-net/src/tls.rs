//! libp2p's TLS 1.3 handshake (`/tls/1.0.0`, the libp2p TLS spec) with
//! AES-GCM preferred over ChaCha20-Poly1305.
//!
//! libp2p-tls 0.7 lists ChaCha20-Poly1305 first and lets no user change it;
//! on CPUs with AES instructions that costs about a quarter of the bulk
//! throughput (DESIGN.md §3). Here the rustls configs are ours: AES-128-GCM,
//! AES-256-GCM, then ChaCha20-Poly1305 (still offered, for peers without
//! AES), and as a server we pick by our order, not the client's, so a stock
//! libp2p-tls dialer gets AES-GCM too.
//!
//! Certificates (generation, parsing, the libp2p public-key extension and its
//! signature) come from libp2p-tls's public `certificate` module: this module
//! must never parse X.509 itself. It only decides which certificates to
//! accept (exactly one, a valid libp2p certificate, the dialed peer when one
//! is expected), that handshake signatures are made by the certificate's key,
//! and that nothing but TLS 1.3 is spoken.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use futures::{AsyncRead, AsyncWrite, FutureExt, future::BoxFuture};
use futures_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use libp2p::{
    PeerId,
    core::{
        UpgradeInfo,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    },
    identity::Keypair,
    tls::certificate,
};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, OtherError,
    SignatureScheme, SupportedCipherSuite,
    client::{
        ClientConfig, ResolvesClientCert, Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{
        CryptoProvider,
        aws_lc_rs::{
            self,
            cipher_suite::{
                TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
            },
        },
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{
        ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

/// The multistream-select name of the libp2p TLS handshake.
pub(crate) const PROTOCOL_NAME: &str = "/tls/1.0.0";

/// ALPN value the libp2p TLS spec gives the handshake.
const ALPN: &[u8] = b"libp2p";

/// Our preference, best first. AES-GCM runs on the CPU's AES instructions
/// (~1,070 MiB/s here against ~790 for ChaCha20); AES-128 before AES-256
/// because it runs 10 rounds instead of 14, and a 128-bit key is ample.
const CIPHER_SUITES: [SupportedCipherSuite; 3] = [
    TLS13_AES_128_GCM_SHA256,
    TLS13_AES_256_GCM_SHA384,
    TLS13_CHACHA20_POLY1305_SHA256,
];

/// The only protocol version: the spec forbids anything below TLS 1.3.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Handshake signature schemes we accept from a peer's certificate key, best
/// first. All are valid in TLS 1.3 and all are ones libp2p-tls's
/// `verify_signature` can check (no ECDSA P-521, no Ed448, no PKCS#1 v1.5,
/// which TLS 1.3 forbids in CertificateVerify).
const SIGNATURE_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Why the TLS security upgrade could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("generating the libp2p TLS certificate: {0}")]
    Certificate(#[from] certificate::GenError),
    #[error("building the rustls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a TLS handshake with a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("TLS handshake with a dialing peer failed: {0}")]
    Inbound(std::io::Error),
    #[error("TLS handshake with a dialed peer failed: {0}")]
    Outbound(std::io::Error),
    /// The verifiers have accepted the certificate already, so this means a
    /// rustls behaviour we did not expect, never a peer we trusted wrongly.
    #[error("the peer's certificate cannot be read after the handshake: {0}")]
    PeerCertificate(String),
}

/// The libp2p TLS security upgrade, for `SwarmBuilder::with_tcp` and
/// `with_relay_client` (`Config::new` has the shape of `tls::Config::new`).
#[derive(Clone)]
pub(crate) struct Config {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("tls::Config")
            .field("cipher_suites", &CIPHER_SUITES)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A config that accepts any peer with a valid libp2p certificate; the
    /// swarm then compares its peer id with the one it dialed.
    pub(crate) fn new(identity: &Keypair) -> Result<Self, ConfigError> {
        Self::build(identity, None)
    }

    /// A config whose dials abort the handshake unless the server proves it
    /// is `peer` (the spec's check, done inside TLS).
    #[cfg(test)]
    pub(crate) fn expecting(identity: &Keypair, peer: PeerId) -> Result<Self, ConfigError> {
        Self::build(identity, Some(peer))
    }

    fn build(identity: &Keypair, expected_server: Option<PeerId>) -> Result<Self, ConfigError> {
        // One certificate for both roles: the spec allows reusing it, and its
        // key is unrelated to the identity key as the spec asks.
        let (cert, key) = certificate::generate(identity)?;
        // A resolver, not `with_single_cert`: that one checks the certificate
        // with webpki, which refuses the critical libp2p extension.
        let signing_key = provider().key_provider.load_private_key(key)?;
        let own = Arc::new(OwnCertificate(Arc::new(CertifiedKey::new(
            vec![cert],
            signing_key,
        ))));

        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck { expected_server }))
            .with_client_cert_resolver(own.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        // The spec: a client of this version MUST NOT send a server name.
        client.enable_sni = false;
        // A resumed session skips certificate verification, and so the
        // expected-peer check: every handshake is a full one.
        client.resumption = Resumption::disabled();

        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_client_cert_verifier(Arc::new(ClientCheck))
            .with_cert_resolver(own);
        server.alpn_protocols = vec![ALPN.to_vec()];
        // Our order, not the dialer's: stock libp2p-tls dialers list ChaCha20
        // first and would otherwise get it.
        server.ignore_client_order = true;
        // No tickets or session cache: resumption would skip the client
        // certificate check on the next connection.
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// Presents our one certificate whatever the peer hints at: a libp2p peer
/// accepts any self-signed certificate carrying our extension.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = CIPHER_SUITES.to_vec();
    Arc::new(provider)
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL_NAME)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        let acceptor = TlsAcceptor::from(self.server);
        async move {
            let stream = acceptor
                .accept(socket)
                .await
                .map_err(UpgradeError::Inbound)?;
            let peer = authenticated_peer(stream.get_ref().1)?;
            Ok((peer, TlsStream::from(stream)))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        let connector = TlsConnector::from(self.client);
        // Any name will do: SNI is off, and the verifier ignores the name.
        let unnamed = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
        async move {
            let stream = connector
                .connect(unnamed, socket)
                .await
                .map_err(UpgradeError::Outbound)?;
            let peer = authenticated_peer(stream.get_ref().1)?;
            Ok((peer, TlsStream::from(stream)))
        }
        .boxed()
    }
}

/// The peer id proven by a finished handshake's (already verified) certificate.
fn authenticated_peer(state: &CommonState) -> Result<PeerId, UpgradeError> {
    let Some([cert]) = state.peer_certificates() else {
        return Err(UpgradeError::PeerCertificate(
            "not exactly one certificate".into(),
        ));
    };
    let peer = certificate::parse(cert)
        .map_err(|e| UpgradeError::PeerCertificate(e.to_string()))?
        .peer_id();
    tracing::debug!(
        %peer,
        suite = ?state.negotiated_cipher_suite().map(|s| s.suite()),
        "TLS handshake done"
    );
    Ok(peer)
}

/// A certificate the libp2p TLS spec tells us to refuse.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("a libp2p peer presents exactly one certificate, this one sent {0}")]
    CertificateCount(usize),
    #[error("not a valid libp2p certificate: {0}")]
    NotLibp2p(#[from] certificate::ParseError),
    /// Boxed: two peer ids would make every `Result` carrying this large.
    #[error("dialed {}, but the certificate is {}'s", .0.expected, .0.actual)]
    WrongPeer(Box<PeerMismatch>),
    #[error("the handshake signature is not the certificate key's: {0}")]
    Signature(#[from] certificate::VerificationError),
    #[error("TLS 1.2 is never negotiated by libp2p")]
    Tls12,
}

#[derive(Debug)]
struct PeerMismatch {
    expected: PeerId,
    actual: PeerId,
}

impl From<Refusal> for rustls::Error {
    fn from(refusal: Refusal) -> Self {
        let kind = match refusal {
            Refusal::Tls12 => return rustls::Error::General(refusal.to_string()),
            Refusal::Signature(_) => CertificateError::BadSignature,
            other => CertificateError::Other(OtherError(Arc::new(other))),
        };
        rustls::Error::InvalidCertificate(kind)
    }
}

/// The peer id a presented chain proves: exactly one certificate, self-signed,
/// currently valid, carrying a libp2p extension signed by the identity key
/// (the last three are what `certificate::parse` checks).
fn presented_peer(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<PeerId, Refusal> {
    if !intermediates.is_empty() {
        return Err(Refusal::CertificateCount(1 + intermediates.len()));
    }
    Ok(certificate::parse(end_entity)?.peer_id())
}

/// Checks that the handshake transcript was signed by the certificate's key
/// (whose possession the libp2p extension ties to the peer id).
fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    certificate::parse(cert)
        .map_err(Refusal::from)?
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(Refusal::from)?;
    Ok(HandshakeSignatureValid::assertion())
}

/// How a dialer judges the listener's certificate.
#[derive(Debug)]
struct ServerCheck {
    expected_server: Option<PeerId>,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name_we_never_send: &ServerName<'_>,
        _ocsp_response: &[u8],
        // `certificate::parse` checks validity against the clock itself.
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = presented_peer(end_entity, intermediates)?;
        match self.expected_server {
            Some(expected) if expected != actual => {
                Err(Refusal::WrongPeer(Box::new(PeerMismatch { expected, actual })).into())
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Refusal::Tls12.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SIGNATURE_SCHEMES.to_vec()
    }
}

/// How a listener judges the dialer's certificate. Client authentication is
/// mandatory in libp2p: a dialer without a certificate is refused.
#[derive(Debug)]
struct ClientCheck;

impl ClientCertVerifier for ClientCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        presented_peer(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Refusal::Tls12.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SIGNATURE_SCHEMES.to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use futures::{AsyncReadExt, AsyncWriteExt, future::join};
    use rustls::CipherSuite;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    use super::*;

    type Pipe = Compat<tokio::io::DuplexStream>;
    type Secured = (PeerId, TlsStream<Pipe>);

    fn pipe() -> (Pipe, Pipe) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (a.compat(), b.compat())
    }

    /// Both ends of one handshake over an in-memory pipe, with a deadline so a
    /// side that waits for a peer which gave up fails the test instead of
    /// hanging it.
    async fn handshake<L, D>(
        listener: L,
        dialer: D,
    ) -> (Result<Secured, L::Error>, Result<Secured, D::Error>)
    where
        L: InboundConnectionUpgrade<Pipe, Output = Secured> + UpgradeInfo<Info = &'static str>,
        D: OutboundConnectionUpgrade<Pipe, Output = Secured> + UpgradeInfo<Info = &'static str>,
    {
        let (listener_end, dialer_end) = pipe();
        let both = join(
            listener.upgrade_inbound(listener_end, PROTOCOL_NAME),
            dialer.upgrade_outbound(dialer_end, PROTOCOL_NAME),
        );
        tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("both handshakes end within 10 s")
    }

    fn suite(stream: &TlsStream<Pipe>) -> CipherSuite {
        stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .expect("a finished handshake has a suite")
            .suite()
    }

    /// Application data crosses the secured pipe both ways.
    async fn exchange(listener: &mut TlsStream<Pipe>, dialer: &mut TlsStream<Pipe>) {
        dialer.write_all(b"ping from the dialer").await.unwrap();
        dialer.flush().await.unwrap();
        let mut got = [0u8; 20];
        listener.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping from the dialer");
        listener.write_all(b"pong from the listener").await.unwrap();
        listener.flush().await.unwrap();
        let mut got = [0u8; 22];
        dialer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong from the listener");
    }

    /// Checks a successful handshake: each side learned the other's peer id,
    /// the suite is `expected` on both sides, and data flows.
    async fn assert_secured(
        listener: Secured,
        dialer: Secured,
        listener_key: &Keypair,
        dialer_key: &Keypair,
        expected: CipherSuite,
    ) {
        let (dialer_seen_by_listener, mut listener_stream) = listener;
        let (listener_seen_by_dialer, mut dialer_stream) = dialer;
        assert_eq!(dialer_seen_by_listener, dialer_key.public().to_peer_id());
        assert_eq!(listener_seen_by_dialer, listener_key.public().to_peer_id());
        assert_eq!(suite(&listener_stream), expected);
        assert_eq!(suite(&dialer_stream), expected);
        exchange(&mut listener_stream, &mut dialer_stream).await;
    }

    #[tokio::test]
    async fn stock_libp2p_tls_dialer_gets_aes_from_our_listener() {
        let (ours, stock) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (listener, dialer) = handshake(
            Config::new(&ours).unwrap(),
            libp2p::tls::Config::new(&stock).unwrap(),
        )
        .await;
        assert_secured(
            listener.unwrap(),
            dialer.unwrap(),
            &ours,
            &stock,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        )
        .await;
    }

    #[tokio::test]
    async fn our_dialer_gets_aes_from_a_stock_libp2p_tls_listener() {
        let (stock, ours) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (listener, dialer) = handshake(
            libp2p::tls::Config::new(&stock).unwrap(),
            Config::new(&ours).unwrap(),
        )
        .await;
        assert_secured(
            listener.unwrap(),
            dialer.unwrap(),
            &stock,
            &ours,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        )
        .await;
    }

    #[tokio::test]
    async fn ours_to_ours_uses_aes() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (listener, dialer) =
            handshake(Config::new(&a).unwrap(), Config::new(&b).unwrap()).await;
        assert_secured(
            listener.unwrap(),
            dialer.unwrap(),
            &a,
            &b,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        )
        .await;
    }

    /// The reason this module exists: two stock libp2p-tls ends settle on
    /// ChaCha20. If this starts failing, upstream changed its order.
    #[tokio::test]
    async fn stock_to_stock_uses_chacha20() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (listener, dialer) = handshake(
            libp2p::tls::Config::new(&a).unwrap(),
            libp2p::tls::Config::new(&b).unwrap(),
        )
        .await;
        assert_secured(
            listener.unwrap(),
            dialer.unwrap(),
            &a,
            &b,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        )
        .await;
    }

    /// A rustls dialer with a libp2p certificate for `identity`, offering only
    /// `suites` and presenting `cert` (a libp2p one when `None`).
    fn raw_dialer(
        identity: &Keypair,
        suites: Vec<SupportedCipherSuite>,
        cert: Option<(
            CertificateDer<'static>,
            rustls::pki_types::PrivateKeyDer<'static>,
        )>,
    ) -> TlsConnector {
        let (cert, key) = cert.unwrap_or_else(|| certificate::generate(identity).unwrap());
        let mut restricted = aws_lc_rs::default_provider();
        restricted.cipher_suites = suites;
        let mut config = ClientConfig::builder_with_provider(Arc::new(restricted))
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck {
                expected_server: None,
            }))
            .with_client_cert_resolver(Arc::new(OwnCertificate(Arc::new(CertifiedKey::new(
                vec![cert],
                provider().key_provider.load_private_key(key).unwrap(),
            )))));
        config.alpn_protocols = vec![ALPN.to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    fn unnamed() -> ServerName<'static> {
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
    }

    #[tokio::test]
    async fn chacha20_only_dialer_is_still_served() {
        let (ours, other) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let dialer = raw_dialer(&other, vec![TLS13_CHACHA20_POLY1305_SHA256], None);
        let (listener_end, dialer_end) = pipe();
        let (listener, dialer) = join(
            Config::new(&ours)
                .unwrap()
                .upgrade_inbound(listener_end, PROTOCOL_NAME),
            dialer.connect(unnamed(), dialer_end),
        )
        .await;
        let (peer, stream) = listener.unwrap();
        assert_eq!(peer, other.public().to_peer_id());
        assert_eq!(suite(&stream), CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        assert_eq!(
            dialer.unwrap().get_ref().1.negotiated_cipher_suite(),
            Some(TLS13_CHACHA20_POLY1305_SHA256)
        );
    }

    #[tokio::test]
    async fn dial_expecting_another_peer_fails() {
        let listener_key = Keypair::generate_ed25519();
        let dialer_key = Keypair::generate_ed25519();
        let someone_else = Keypair::generate_ed25519().public().to_peer_id();

        let (listener, dialer) = handshake(
            Config::new(&listener_key).unwrap(),
            Config::expecting(&dialer_key, someone_else).unwrap(),
        )
        .await;
        let refused = dialer.unwrap_err().to_string();
        assert!(
            refused.contains(&someone_else.to_string()),
            "the error names the peer we expected: {refused}"
        );
        assert!(listener.is_err(), "the listener sees the dialer abort");

        // The same dial expecting the right peer succeeds, so the refusal
        // above was about the peer id and nothing else.
        let (listener, dialer) = handshake(
            Config::new(&listener_key).unwrap(),
            Config::expecting(&dialer_key, listener_key.public().to_peer_id()).unwrap(),
        )
        .await;
        assert_secured(
            listener.unwrap(),
            dialer.unwrap(),
            &listener_key,
            &dialer_key,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        )
        .await;
    }

    /// A self-signed certificate without the libp2p extension.
    fn plain_certificate() -> (
        CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let plain = rcgen::generate_simple_self_signed(vec!["spore.invalid".to_string()]).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(plain.key_pair.serialize_der());
        (plain.cert.der().clone(), key.into())
    }

    #[tokio::test]
    async fn listener_refuses_a_dialer_without_a_libp2p_certificate() {
        let ours = Keypair::generate_ed25519();
        let impostor = raw_dialer(
            &Keypair::generate_ed25519(),
            CIPHER_SUITES.to_vec(),
            Some(plain_certificate()),
        );
        let (listener_end, dialer_end) = pipe();
        let (listener, _dialer) = join(
            Config::new(&ours)
                .unwrap()
                .upgrade_inbound(listener_end, PROTOCOL_NAME),
            // In TLS 1.3 the client is done before the server has judged its
            // certificate, so only the listener's verdict matters here.
            impostor.connect(unnamed(), dialer_end),
        )
        .await;
        let refused = listener.unwrap_err().to_string();
        assert!(
            // rustls shows our `Refusal` by its Debug form.
            refused.contains("NotLibp2p"),
            "refused for the certificate: {refused}"
        );
    }

    #[tokio::test]
    async fn dialer_refuses_a_listener_without_a_libp2p_certificate() {
        let ours = Keypair::generate_ed25519();
        let (cert, key) = plain_certificate();
        let impostor = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_client_cert_verifier(Arc::new(ClientCheck))
            .with_single_cert(vec![cert], key)
            .unwrap();
        let (listener_end, dialer_end) = pipe();
        let (_listener, dialer) = join(
            TlsAcceptor::from(Arc::new(impostor)).accept(listener_end),
            Config::new(&ours)
                .unwrap()
                .upgrade_outbound(dialer_end, PROTOCOL_NAME),
        )
        .await;
        let refused = dialer.unwrap_err().to_string();
        assert!(
            // rustls shows our `Refusal` by its Debug form.
            refused.contains("NotLibp2p"),
            "refused for the certificate: {refused}"
        );
    }

    #[test]
    fn a_chain_of_two_certificates_is_refused() {
        let (cert, _) = certificate::generate(&Keypair::generate_ed25519()).unwrap();
        let (other, _) = certificate::generate(&Keypair::generate_ed25519()).unwrap();
        assert!(presented_peer(&cert, &[]).is_ok());
        assert!(matches!(
            presented_peer(&cert, std::slice::from_ref(&other)),
            Err(Refusal::CertificateCount(2))
        ));
        let verifier = ServerCheck {
            expected_server: None,
        };
        let result = verifier.verify_server_cert(&cert, &[other], &unnamed(), &[], UnixTime::now());
        assert!(matches!(result, Err(rustls::Error::InvalidCertificate(_))));
    }

    #[test]
    fn our_configs_speak_only_tls13_and_rank_aes_first() {
        let config = Config::new(&Keypair::generate_ed25519()).unwrap();
        for provider in [
            config.client.crypto_provider(),
            config.server.crypto_provider(),
        ] {
            let suites: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
            assert_eq!(
                suites,
                [
                    CipherSuite::TLS13_AES_128_GCM_SHA256,
                    CipherSuite::TLS13_AES_256_GCM_SHA384,
                    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                ]
            );
            assert!(provider.cipher_suites.iter().all(|s| s.tls13().is_some()));
        }
        assert!(config.server.ignore_client_order);
        assert!(!config.client.enable_sni);
    }
}
