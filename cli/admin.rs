//! `reef admin`: cluster operations (members, backup, offline restore).

use crate::output::{self, Format};
use crate::verbs::connect;
use crate::{CliResult, Failure};
use clap::Subcommand;
use reef_control_plane::store::Store;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List the control-plane members: id, address, role.
    Members {
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// Add a member (it joins as a learner and becomes a voter once caught up).
    AddMember { id: u64, address: String },
    /// Remove a member from the cluster.
    RemoveMember { id: u64 },
    /// Write a consistent backup of the live cluster (objects and blobs) to FILE.
    Backup { file: PathBuf },
    /// Build, offline, a single-member control plane from a backup; others then join it.
    Restore {
        file: PathBuf,
        /// The new member's data dir (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new member's id.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// The address the restored member will be reached at (its --listen/--advertise).
        #[arg(long, default_value = "127.0.0.1:7070")]
        advertise: String,
    },
}

pub async fn run(command: AdminCommand) -> CliResult {
    match command {
        AdminCommand::Members { output } => {
            let (client, _) = connect(None)?;
            print_members(&client.members().await?, output);
        }
        AdminCommand::AddMember { id, address } => {
            let (client, _) = connect(None)?;
            let members = client.add_member(id, &address).await?;
            println!("member {id} added");
            print_members(&members, Format::Table);
        }
        AdminCommand::RemoveMember { id } => {
            let (client, _) = connect(None)?;
            let members = client.remove_member(id).await?;
            println!("member {id} removed");
            print_members(&members, Format::Table);
        }
        AdminCommand::Backup { file } => {
            let (client, _) = connect(None)?;
            let (revision, checksum, bytes) = client.backup(&file).await?;
            println!(
                "backup of revision {revision} written to {} ({bytes} bytes, sha256 {checksum})",
                file.display()
            );
        }
        AdminCommand::Restore {
            file,
            data_dir,
            id,
            advertise,
        } => restore(&file, &data_dir, id, &advertise)?,
    }
    Ok(())
}

fn print_members(members: &[reef_api::client::Member], format: Format) {
    if format == Format::Json {
        output::print_json(&members);
        return;
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| vec![m.id.to_string(), m.address.clone(), m.role.clone()])
        .collect();
    output::print_rows(&["ID", "ADDRESS", "ROLE"], &rows);
}

fn restore(file: &Path, data_dir: &Path, id: u64, advertise: &str) -> CliResult {
    let occupied = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(Failure::usage(format!(
            "error: {} is not empty; restore builds a new member in an empty directory",
            data_dir.display()
        )));
    }
    let store_dir = data_dir.join("store");
    let info = Store::restore(file, &store_dir, id, advertise)
        .map_err(|e| Failure::other(format!("error: restoring {}: {e}", file.display())))?;
    // A new secret, not the backup's: members of the old cluster must not be
    // able to talk to the restored one (it publishes this one when it starts).
    let secret = reef_control_plane::credentials::new_secret();
    reef_api::config::write_private(&data_dir.join("raft.secret"), secret.as_bytes())
        .map_err(|e| Failure::other(format!("error: writing the Raft secret: {e}")))?;
    println!(
        "restored revision {} into {} as member {id} at {advertise}",
        info.revision,
        data_dir.display()
    );
    println!(
        "start it with: reef control-plane --id {id} --data-dir {} --listen {advertise}",
        data_dir.display()
    );
    Ok(())
}
