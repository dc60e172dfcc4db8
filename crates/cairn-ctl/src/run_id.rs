//! Shortened run ids, as git takes shortened commit hashes: `ctl task show 01JAB7`
//! means the one run whose id starts with `01JAB7`. A full id (26 characters) is used
//! as it is; a shorter one is looked up (`GET /api/tasks?idPrefix=`) and must name
//! exactly one run.

use anyhow::{Result, bail};

use super::client::Client;

/// A run id's length (a ULID).
const FULL: usize = 26;
/// The shortest prefix taken: shorter ones match too many runs to be useful.
pub const MIN_PREFIX: usize = 4;
/// How many candidates an ambiguous prefix lists.
const CANDIDATES: usize = 5;

/// The full id of the run `given` names: itself when it is a full id, else the one run
/// whose id starts with it.
pub async fn resolve(client: &Client, given: &str) -> Result<String> {
    let given = given.trim();
    if given.len() == FULL {
        return Ok(given.to_owned());
    }
    if given.is_empty() || given.len() > FULL || !given.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!(
            "`{given}` is not a run id: run ids are {FULL} letters and digits (`ctl task list` shows them)"
        );
    }
    if given.len() < MIN_PREFIX {
        bail!(
            "run id `{given}` is too short: give at least {MIN_PREFIX} characters of it (`ctl task list` shows ids)"
        );
    }
    let body = client
        .get_query(
            "/api/tasks",
            &[
                ("idPrefix", given.to_owned()),
                ("limit", (CANDIDATES + 1).to_string()),
            ],
        )
        .await?;
    let ids: Vec<&str> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    match ids.as_slice() {
        [] => bail!("no run id starts with `{given}`"),
        [one] => Ok((*one).to_owned()),
        many => {
            let shown: Vec<String> = many
                .iter()
                .take(CANDIDATES)
                .map(|id| format!("  {id}"))
                .collect();
            let more = if many.len() > CANDIDATES || body["nextCursor"].is_string() {
                "\n  …"
            } else {
                ""
            };
            bail!(
                "run id `{given}` is ambiguous; it starts these runs (give more characters):\n{}{more}",
                shown.join("\n")
            )
        }
    }
}
