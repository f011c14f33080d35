/* CLI subcommands: SD_COMMAND(name, function, one-line summary). Each function is
 * `int function(int argc, char **argv)` (argv[0] is the subcommand) returning an exit code,
 * defined in cli/cmd_<name>.c. Keep sorted. */
SD_COMMAND("version", cmd_version, "print the engine version")
SD_COMMAND("devices", cmd_devices, "list OpenCL platforms and devices")
