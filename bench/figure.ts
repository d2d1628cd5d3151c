/** One line of `npm run bench`: a figure beside a baseline measured in the same run. */
export interface Figure {
  figure: string;
  unit: string;
  value: number;
  baseline?: number | undefined;
  baselineName?: string | undefined;
  goal: string;
  met: boolean;
  detail?: Record<string, number | string> | undefined;
}
