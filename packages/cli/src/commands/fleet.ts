import type { Command } from 'commander';

/** Device registry commands: model, device, group. */
export function fleetCommands(): Command[] {
  return [];
}
