//! What the compiler's tests share: an inventory and a playbook compiled as `cluster.toml` and
//! `site.toml` of a throw-away directory, errors as text without that directory.

use provision_engine::inventory::{Inventory, InventoryRules};
use provision_engine::playbook_file::PlaybookFile;
use provision_playbook::compile::{Compiled, SecretsView};

/// `playbook` compiled against `inventory` (no manager or private address required), without
/// secrets; an error reads `site.toml:LINE:COLUMN: ...` or `cluster.toml:...`.
pub fn compile(inventory: &str, playbook: &str) -> Result<Compiled, String> {
    let dir = tempfile::tempdir().unwrap();
    let strip = |e: String| e.replace(&format!("{}/", dir.path().display()), "");
    let rules = InventoryRules {
        require_manager: false,
        require_private_ip: false,
    };
    let inv = Inventory::parse(inventory, &dir.path().join("cluster.toml"), &rules)
        .map_err(|e| strip(e.to_string()))?;
    let pb = PlaybookFile::parse(
        playbook,
        &dir.path().join("site.toml"),
        &provision_playbook::known_steps(),
    )
    .map_err(|e| strip(e.to_string()))?;
    let secrets = toml::Table::new();
    let none = |_: &str| false;
    let view = SecretsView {
        table: &secrets,
        contains_secret: &none,
    };
    provision_playbook::compile(&inv, &pb, &view).map_err(|e| strip(e.to_string()))
}
