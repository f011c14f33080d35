/* CLI subcommands: SD_COMMAND(name, function, one-line summary). Each function is
 * `int function(int argc, char **argv)` (argv[0] is the subcommand) returning an exit code,
 * defined in cli/cmd_<name>.c. Keep sorted. */
SD_COMMAND("cache", cmd_cache, "show, verify, clear or shrink the node-output cache")
SD_COMMAND("caption", cmd_caption, "print BLIP captions of images")
SD_COMMAND("devices", cmd_devices, "list OpenCL platforms and devices")
SD_COMMAND("export", cmd_export, "write a workflow as ComfyUI JSON (API or UI format)")
SD_COMMAND("import", cmd_import, "convert a ComfyUI workflow (API or UI format, or a PNG) to workflow XML")
SD_COMMAND("interrogate", cmd_interrogate, "print CLIP interrogator prompts for images")
SD_COMMAND("lua", cmd_lua, "run a Lua script with the sdflow module")
SD_COMMAND("nodes", cmd_nodes, "describe node types: inputs, outputs, defaults, docs")
SD_COMMAND("replay", cmd_replay, "re-run the workflow embedded in a PNG and compare the image")
SD_COMMAND("run", cmd_run, "run a workflow, reusing cached node outputs")
SD_COMMAND("save", cmd_save, "rewrite a workflow: new parameter defaults, parameters inlined")
SD_COMMAND("serve", cmd_serve, "serve ComfyUI's HTTP and WebSocket API with a persistent queue")
SD_COMMAND("validate", cmd_validate, "check workflow files and report every problem at once")
SD_COMMAND("version", cmd_version, "print the engine version")
SD_COMMAND("worker", cmd_worker, "run prompts queued by `sdflow serve --queue` on Redis Streams")
