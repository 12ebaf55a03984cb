//! One issuance: an order for the bundle's names, each authorization proven by HTTP-01
//! (answered through `Challenges` while the order waits), then a new key, its CSR, and
//! the issued chain. The result is a PEM bundle as `/certificates` takes one.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use super::challenges::Challenges;

/// How long the directory may take to validate the challenges, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
const ISSUE_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether an error says the directory no longer knows the account.
pub fn account_is_unknown(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<instant_acme::Error>(),
            Some(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
        )
    })
}

/// Obtains a certificate for `names`; the PEM holds the chain, then the new private key.
pub async fn issue(
    account: &Account,
    names: &[String],
    challenges: &Challenges,
) -> anyhow::Result<String> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("the directory refused the order")?;
    // Answered until the order is ready or has failed.
    let mut offered = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.context("cannot read an authorization")?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => bail!("the authorization for {name} is {status:?}"),
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| anyhow!("the directory offers no HTTP-01 challenge for {name}"))?;
        let key_authorization = challenge.key_authorization();
        offered.push(challenges.offer(&challenge.token, key_authorization.as_str()));
        challenge
            .set_ready()
            .await
            .with_context(|| format!("the directory refused the challenge for {name}"))?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(VALIDATION_TIMEOUT);
    let status = order
        .poll_ready(&retries)
        .await
        .context("the challenges were not validated")?;
    if status != OrderStatus::Ready {
        bail!("{}", failed_challenges(&mut order).await);
    }
    drop(offered);
    let key = order
        .finalize()
        .await
        .context("the directory refused to finalize the order")?;
    let chain = order
        .poll_certificate(&retries.timeout(ISSUE_TIMEOUT))
        .await
        .context("the directory did not issue the certificate")?;
    Ok(format!("{chain}{key}"))
}

/// Why the order is invalid, by name, as the directory says.
async fn failed_challenges(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        let name = authorization.identifier().to_string();
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                let detail = problem.detail.as_deref().unwrap_or("no detail given");
                reasons.push(format!("{name}: {detail}"));
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid (the directory gave no reason)".to_owned()
    } else {
        format!("the challenge failed: {}", reasons.join("; "))
    }
}
