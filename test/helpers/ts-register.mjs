// `node --import ./test/helpers/ts-register.mjs src/main.ts ...` runs the gateway from its sources.
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
