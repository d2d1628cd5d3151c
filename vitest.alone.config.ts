import { defineConfig } from 'vitest/config';

/*
 * Tests that change a setting of a whole cluster (the visibility gate holds
 * commits with synchronous_standby_names) and so must not share it with
 * other files: a session that has not reloaded its configuration yet would
 * wait for a standby that does not exist. Run after the main suite, alone.
 */
export default defineConfig({
  test: {
    include: ['test/**/*.alone.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    reporters: ['default'],
  },
});
