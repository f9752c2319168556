//! The ACME account: its key loaded from storage, or created and stored on
//! first use (with a cluster the first instance's key wins, so every
//! instance reads it back), registered with the directory (trusting
//! `ca_cert` when set), the contact address set. Kept until an order fails
//! (the CA may have forgotten it).

use instant_acme::{Account, Key};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{ca_client, AcmeError, AcmeManager};

impl AcmeManager {
    /// The account, from the stored key (created and stored on first use).
    pub(super) async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let pem = match self.storage.load_account_key().await? {
            Some(pem) => pem,
            None => {
                let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::AccountKey(e.to_string()))?;
                let pem = key.serialize_pem();
                self.storage.store_account_key(&pem).await?;
                tracing::info!("created ACME account key");
                // With a cluster the first instance's key wins: read it back.
                self.storage.load_account_key().await?.unwrap_or(pem)
            }
        };
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| AcmeError::AccountKey(e.to_string()))?;
        let key = Key::from_pkcs8_der(der.clone_key())?;
        let client = ca_client::CaClient::new(self.settings.ca_cert.as_deref()).map_err(AcmeError::Order)?;
        let builder = Account::builder_with_http(Box::new(client));
        let (account, _) =
            builder.create_from_key((key, PrivateKeyDer::Pkcs8(der)), self.settings.directory.clone()).await?;
        if let Some(email) = &self.settings.email {
            let contact = format!("mailto:{email}");
            if let Err(e) = account.update_contacts(&[contact.as_str()]).await {
                tracing::warn!(error = %e, "cannot set the ACME account contact");
            }
        }
        *slot = Some(account.clone());
        Ok(account)
    }
}
