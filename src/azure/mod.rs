//! Azure: cloud environments, `azure.json`, credentials and the Key Vault client.

pub mod azure_json;
pub mod cloud;
pub mod credential;
pub mod environment;
pub mod key;
pub mod keyvault;
pub mod proxy;
pub mod upstream;
pub mod user_agent;
