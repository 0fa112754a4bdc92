//! Where a pool's configuration comes from: its ConfigMap, watched through the API, or a
//! file (outside a cluster), polled. Either sends the configuration's text each time it
//! changes, or why there is none.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use hookwarden_api::pool_config::POOL_CONFIG_FILE;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use tokio::sync::mpsc;

use super::watch;

/// The configuration's text, or why there is none to read.
pub type ConfigUpdate = Result<String, String>;

/// Sends `update` unless it is the same as the one sent before; false once nobody listens.
async fn send_changed(
    last: &mut Option<ConfigUpdate>,
    to: &mpsc::Sender<ConfigUpdate>,
    update: ConfigUpdate,
) -> bool {
    if last.as_ref() == Some(&update) {
        return true;
    }
    *last = Some(update.clone());
    to.send(update).await.is_ok()
}

/// Reads `path` every `every`; sends its text when it changed.
pub fn file(path: PathBuf, every: Duration) -> mpsc::Receiver<ConfigUpdate> {
    let (to, from) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let update = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()));
            if !send_changed(&mut last, &to, update).await {
                return;
            }
        }
    });
    from
}

/// Watches ConfigMap `name` in `namespace`; sends its key [`POOL_CONFIG_FILE`] when it
/// changed.
pub fn config_map(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> mpsc::Receiver<ConfigUpdate> {
    let (to, from) = mpsc::channel(4);
    let stream = watch::named(Api::<ConfigMap>::namespaced(client, namespace), name);
    let name = name.to_string();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut last = None;
        while let Some(object) = stream.next().await {
            let update = text_of(&name, object);
            if !send_changed(&mut last, &to, update).await {
                return;
            }
        }
    });
    from
}

/// The configuration in ConfigMap `name` (`None`: it does not exist). Pure.
fn text_of(name: &str, object: Option<ConfigMap>) -> ConfigUpdate {
    let Some(object) = object else {
        return Err(format!("ConfigMap {name} not found"));
    };
    object
        .data
        .and_then(|mut data| data.remove(POOL_CONFIG_FILE))
        .ok_or_else(|| format!("ConfigMap {name} has no key {POOL_CONFIG_FILE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pool_key_of_the_config_map() {
        assert_eq!(text_of("p", None).unwrap_err(), "ConfigMap p not found");
        let mut cm = ConfigMap::default();
        assert_eq!(
            text_of("p", Some(cm.clone())).unwrap_err(),
            "ConfigMap p has no key pool.yaml"
        );
        cm.data = Some([(POOL_CONFIG_FILE.to_string(), "pool: {}".to_string())].into());
        assert_eq!(text_of("p", Some(cm)).unwrap(), "pool: {}");
    }

    #[tokio::test]
    async fn a_file_is_sent_when_its_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.yaml");
        let mut updates = file(path.clone(), Duration::from_millis(10));
        assert!(
            updates
                .recv()
                .await
                .unwrap()
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::write(&path, "one").unwrap();
        assert_eq!(updates.recv().await.unwrap().unwrap(), "one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(updates.recv().await.unwrap().unwrap(), "two");
        // The same content again is no update.
        std::fs::write(&path, "two").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(updates.try_recv().is_err());
    }
}
