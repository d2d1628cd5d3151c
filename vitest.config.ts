import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file makes its own databases; two cores, so two files at a time.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
