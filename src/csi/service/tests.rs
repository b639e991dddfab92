//! Tests of how parameter errors become Mount errors and statuses.

use tonic::Code;

use super::MountError;
use crate::azure::cloud::CloudError;
use crate::csi::params::ParamError;

#[test]
fn a_refused_cloud_name_keeps_its_status_and_message() {
    let error = MountError::from(ParamError::InvalidCloud(CloudError::Unknown(
        "MarsCloud".to_owned(),
    )));
    let status = error.to_status();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "cloudName: unknown Azure cloud \"MarsCloud\": expected AzurePublicCloud, \
         AzureUSGovernmentCloud or AzureChinaCloud (case-insensitive; empty means \
         AzurePublicCloud)"
    );
    assert_eq!(error.label(), "invalid");

    // Every other parameter error keeps the parameters prefix.
    let error = MountError::from(ParamError::NoObjects);
    assert!(matches!(error, MountError::Params(ParamError::NoObjects)));
    let status = error.to_status();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("invalid SecretProviderClass parameters: "),
        "{}",
        status.message()
    );
}
