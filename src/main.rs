mod config;
mod hook;
mod lwk;

fn main() {}
