//! `meshmail recovery split` and `meshmail recovery join`: the command-line side of
//! [`meshmail::keys::recovery`].

use super::{prompt_new_passphrase, say, Failure, PassphraseSource};
use clap::Subcommand;
use meshmail::codes::Outcome;
use meshmail::keys::{recovery, Account};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum RecoveryCommand {
    /// Split the account into printable recovery share files: any QUORUM of the SHARES files
    /// recover it (keys, certificates, policy), fewer tell nothing about it.
    Split {
        #[arg(long, default_value_t = 3)]
        shares: u8,
        #[arg(long, default_value_t = 2)]
        quorum: u8,
        /// A new directory for the share files (hand each to a different keeper).
        #[arg(long)]
        out: PathBuf,
    },
    /// Recover the account from share files into --home (a new key store); with --check, test
    /// the files against the account already in --home instead (and record that it worked).
    Join {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        check: bool,
        /// Protect the recovered secrets with a new passphrase (asked for).
        #[arg(long)]
        ask_passphrase: bool,
    },
}

pub fn run(home: &Path, pass: &PassphraseSource, command: RecoveryCommand) -> Result<(), Failure> {
    match command {
        RecoveryCommand::Split {
            shares,
            quorum,
            out,
        } => {
            if !(2..=16).contains(&quorum) || shares < quorum || shares > 16 {
                return Err(Failure::new(
                    Outcome::BadUsage,
                    format!(
                        "a quorum of 2 to 16 out of at most 16 shares, not {quorum} of {shares}"
                    ),
                ));
            }
            if out.exists()
                && std::fs::read_dir(&out)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(Failure::new(
                    Outcome::BadUsage,
                    format!("{} exists and is not empty", out.display()),
                ));
            }
            let account = Account::open(home)?;
            let unlocked = account.unlock(pass.read_or_prompt(&account)?.as_ref())?;
            let files = recovery::split(&account, &unlocked, shares, quorum, &out)?;
            for f in &files {
                say!("{}", f.display());
            }
            say!(
                "any {quorum} of these {shares} files recover {}; keep them apart",
                account.address()
            );
            say!("next: `meshmail recovery join --check FILE FILE` tests a quorum of them");
            Ok(())
        }
        RecoveryCommand::Join {
            files,
            check,
            ask_passphrase,
        } => {
            let recovered =
                recovery::join(&files).map_err(|e| Failure::new(Outcome::BadUsage, e))?;
            if check {
                let account = Account::open(home)?;
                let unlocked = account.unlock(pass.read_or_prompt(&account)?.as_ref())?;
                recovered.check_against(&account, &unlocked)?;
                say!(
                    "these shares recover {}: recorded in {}",
                    account.address(),
                    home.display()
                );
                return Ok(());
            }
            let passphrase = if ask_passphrase {
                Some(prompt_new_passphrase()?)
            } else {
                pass.read()?
            };
            let account = recovered.restore(home, passphrase.as_ref())?;
            say!("recovered {} into {}", account.address(), home.display());
            Ok(())
        }
    }
}
