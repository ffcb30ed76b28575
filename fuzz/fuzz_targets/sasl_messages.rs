//! The SASL messages a broker parses from unauthenticated clients, over arbitrary bytes: a
//! PLAIN token, a SCRAM client-first message, and a SCRAM client-final message for an exchange
//! under way; and the server messages a client parses. Checks: nothing panics, and no
//! arbitrary input is accepted as a valid proof.

#![no_main]

use libfuzzer_sys::fuzz_target;
use staunch_protocol::sasl::{
    ClientFirst, PlainToken, SaslError, ScramClient, ScramCredential, ScramMechanism, ScramServer,
};

fuzz_target!(|data: &[u8]| {
    let _ = PlainToken::parse(data);
    for m in ScramMechanism::ALL {
        let _ = ClientFirst::parse(m, data);
        let credential = ScramCredential::from_salted_password(m, vec![1; 16], 4096, &[7; 64]);
        let first = ClientFirst::parse(m, b"n,,n=user,r=fuzznonce").expect("a valid client-first");
        let (server, _) = ScramServer::start(m, first, Some(credential));
        // Without the salted password no input can carry a right proof.
        assert!(matches!(
            server.finish(data),
            Err(SaslError::Malformed { .. } | SaslError::InvalidCredentials)
        ));
        let (mut client, _) = ScramClient::start(m, "user", "password");
        let _ = client.respond(data);
        let _ = client.verify(data);
    }
});
