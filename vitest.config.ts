import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Files run in parallel; every server picks its own free loopback port and its own temp dir.
    fileParallelism: true,
    pool: 'forks',
  },
});
