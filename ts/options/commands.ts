/**
 * Per-command option tables with qemu-img's letters and long names (kept here for existing
 * importers; the typed parsers live in `./commands/`).
 */
export { COMMAND_SPECS, parseCommand, parseCommandLine } from "./commands/index.js";
