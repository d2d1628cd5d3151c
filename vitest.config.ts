import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // *.alone.test.ts change cluster-wide settings; vitest.alone.config.ts runs them after the rest, one at a time.
    exclude: ['**/node_modules/**', 'test/**/*.alone.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file makes its own databases; two cores, so two files at a time.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
