//! Certificates for TLS tests, generated fresh by each test: a CA, a broker certificate for
//! `localhost` and `127.0.0.1`, client certificates (valid, expired, and one signed by a CA
//! the broker does not trust), written as PEM files to a directory so external clients
//! (kcat, Python) can read them too.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// A certificate and its key as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8).
    pub key: PathBuf,
}

/// A test PKI in one directory.
#[derive(Debug)]
pub struct TestPki {
    /// The trusted CA's certificate (PEM): the broker's and the clients' trust anchor.
    pub ca: PathBuf,
    /// The broker's certificate (SANs `localhost` and `127.0.0.1`, CN `broker`, serial 1).
    pub server: CertFiles,
    /// A client certificate of `CN=client,O=Staunch`, signed by the CA.
    pub client: CertFiles,
    /// A client certificate signed by the CA that expired in 2001.
    pub expired_client: CertFiles,
    /// A client certificate signed by a CA nobody trusts.
    pub unknown_client: CertFiles,
    dir: PathBuf,
    ca_params: CertificateParams,
    ca_key_pem: String,
}

fn write(dir: &Path, name: &str, cert_pem: &str, key: &KeyPair) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.cert, cert_pem).expect("writing a test certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("writing a test key");
    files
}

fn authority_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    // Most general first, as usual: the subject reads CN=...,O=Staunch in RFC 2253 order.
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Staunch");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

impl TestPki {
    /// Generates every certificate into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_params = authority_params("Staunch Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("writing the CA");
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let sign = |params: &CertificateParams, name: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("certificate");
            write(dir, name, &cert.pem(), &key)
        };
        let server = sign(&server_params(1), "server");
        let client = sign(&client_params("client"), "client");
        let mut expired = client_params("expired");
        expired.not_before = rcgen::date_time_ymd(2000, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired_client = sign(&expired, "expired-client");

        let other_key = KeyPair::generate().expect("key");
        let other_params = authority_params("Unknown CA");
        let other_issuer = Issuer::from_params(&other_params, &other_key);
        let unknown_key = KeyPair::generate().expect("key");
        let unknown = client_params("stranger")
            .signed_by(&unknown_key, &other_issuer)
            .expect("certificate");
        let unknown_client = write(dir, "unknown-client", &unknown.pem(), &unknown_key);

        TestPki {
            ca,
            server,
            client,
            expired_client,
            unknown_client,
            dir: dir.to_owned(),
            ca_params,
            ca_key_pem,
        }
    }

    /// A new broker certificate signed by the same CA, with serial number `serial`, written
    /// as `<name>.pem` / `<name>-key.pem` (for reload tests).
    pub fn new_server_cert(&self, name: &str, serial: u64) -> CertFiles {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).expect("CA key");
        let issuer = Issuer::from_params(&self.ca_params, &ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = server_params(serial)
            .signed_by(&key, &issuer)
            .expect("certificate");
        write(&self.dir, name, &cert.pem(), &key)
    }
}

fn server_params(serial: u64) -> CertificateParams {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "broker");
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}
