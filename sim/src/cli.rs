//! lwk-sim's own command line (install, the simulated modules) and, for its manual
//! page and help, the tools it stands in for. The tools themselves parse their
//! arguments as the real ones do (`main` hands them argv untouched); this file stands
//! alone so that `cargo xtask` can generate lwk-sim(1) from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "lwk-sim",
    version,
    about = "Simulator of the IHK/McKernel and mOS tools, for trying and testing lwk-runc without an LWK",
    long_about = "One multi-call binary standing in for ihkconfig, ihkosctl, mcexec, mcreboot.sh, \
mcstop+release.sh, lwkctl and yod on a machine without a lightweight kernel. It copies their \
command lines, outputs, exit codes, state machine and failure modes, and acts by the name it is \
called under (install makes hard links with those names) or by its first argument. \
Its state lives under $LWK_SIM_ROOT (default /run/lwk-sim).",
    after_help = SIM_EXAMPLES,
    arg_required_else_help = true
)]
pub struct SimCli {
    #[command(subcommand)]
    pub command: SimCommand,
}

const SIM_EXAMPLES: &str = "\
Examples:
  lwk-sim install --prefix /opt/lwk-sim
  LWK_SIM_ROOT=/run/lwk-sim lwk-sim modprobe
  LWK_RUNC_CONFIG=/usr/share/doc/lwk-sim/examples/sim.toml lwk-runc doctor

Environment: LWK_SIM_ROOT (the simulated node's state), LWK_SIM_CPUS, LWK_SIM_MEM and
LWK_SIM_NUMA (its size, read by modprobe). Faults are injected through $LWK_SIM_ROOT/faults.";

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// install the tools as hard links under PREFIX/bin, and a dummy McKernel image
    Install {
        /// where to install (bin/ and smp-x86/kernel/mckernel.img)
        #[arg(long, value_name = "DIR")]
        prefix: PathBuf,
    },
    /// "load" the IHK modules: create the simulated node (dev/mcd0, the mOS sysfs)
    Modprobe(ToolArgs),
    /// "unload" the IHK modules (fails while an OS instance exists)
    Rmmod(ToolArgs),
    /// IHK: reserve, release and query CPUs and memory; create and destroy OS instances
    Ihkconfig(ToolArgs),
    /// IHK: load, configure, boot and shut down an OS instance; its status and kmsg
    Ihkosctl(ToolArgs),
    /// McKernel: run a program on the LWK (proxy process for its system calls)
    Mcexec(ToolArgs),
    /// McKernel: reserve, load and boot in one go (the site script)
    #[command(name = "mcreboot.sh")]
    Mcreboot(ToolArgs),
    /// McKernel: destroy instances, release resources, unload modules (the site script)
    #[command(name = "mcstop+release.sh")]
    McstopRelease(ToolArgs),
    /// mOS: create, show and delete the LWK partition
    Lwkctl(ToolArgs),
    /// mOS: reserve LWK CPUs and memory for a program and exec it there
    Yod(ToolArgs),
    /// fault: the running McKernel instance OS (default 0) panics now, under whatever runs on it
    Panic(ToolArgs),
}

/// Arguments as the real tool takes them.
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ToolArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::SimCli::command().debug_assert();
    }
}
