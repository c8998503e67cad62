import type { Command } from 'commander';
import { deviceCommand } from './fleet-devices.js';
import { groupCommand } from './fleet-groups.js';
import { modelCommand } from './fleet-models.js';

/** Device registry commands: model, device, group. */
export function fleetCommands(): Command[] {
  return [modelCommand(), deviceCommand(), groupCommand()];
}
