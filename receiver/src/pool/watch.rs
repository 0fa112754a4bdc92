//! One named object watched through the API (kube-runtime's `watcher`, with a field
//! selector on its name, so that a Role with `resourceNames` is enough): what it is now,
//! or that it does not exist.

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

/// The object named `name` each time it changes: `Some` with its content, `None` when it
/// does not exist (after the first list, and on deletion). Errors are logged and retried
/// with back-off; the stream never ends.
pub fn named<K>(api: Api<K>, name: &str) -> impl Stream<Item = Option<K>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_string();
    // Between `Init` and `InitDone` (a relist) the object is held back, so that a relist
    // reads as one change, not as a deletion followed by the object.
    let mut listing: Option<Option<K>> = None;
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let now = match event {
                Ok(Event::Apply(object)) => Some(Some(object)),
                Ok(Event::Delete(_)) => Some(None),
                Ok(Event::Init) => {
                    listing = Some(None);
                    None
                }
                Ok(Event::InitApply(object)) => {
                    listing = Some(Some(object));
                    None
                }
                Ok(Event::InitDone) => Some(listing.take().flatten()),
                Err(error) => {
                    tracing::warn!(%error, object = %name, "watch failed; retrying");
                    None
                }
            };
            futures::future::ready(now)
        })
}
