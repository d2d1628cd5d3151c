import { z } from 'zod';
import { text } from './memory.js';
import { parseInput } from './parse.js';

/** Longest name / displayName / model id accepted: names are labels, not documents. */
export const MAX_PERSONALITY_NAME = 200;
/** Longest systemPrompt accepted, as for a memory's content. */
export const MAX_SYSTEM_PROMPT = 100_000;
export const MAX_MAX_TOKENS = 1_000_000;

/**
 * An object that rejects keys it does not know, naming the key as the field:
 * a misspelt optional field ("isactive") silently dropped would be a write
 * that did not happen.
 */
function exactObject<S extends z.ZodRawShape>(shape: S, notObject: string) {
  const known = new Set(Object.keys(shape));
  return z
    .unknown()
    .superRefine((value, ctx) => {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
      for (const key of Object.keys(value)) {
        if (!known.has(key)) ctx.addIssue({ code: 'custom', path: [key], message: 'is not a field of this body' });
      }
    })
    .pipe(z.object(shape, { error: notObject }));
}

const temperatureMessage = 'must be a number from 0 to 2';
const maxTokensMessage = `must be an integer from 1 to ${MAX_MAX_TOKENS}`;

export const llmConfigInputSchema = exactObject(
  {
    model: text(1, MAX_PERSONALITY_NAME),
    temperature: z
      .number({ error: temperatureMessage })
      .min(0, { error: temperatureMessage })
      .max(2, { error: temperatureMessage })
      .optional(),
    maxTokens: z
      .number({ error: maxTokensMessage })
      .int({ error: maxTokensMessage })
      .min(1, { error: maxTokensMessage })
      .max(MAX_MAX_TOKENS, { error: maxTokensMessage })
      .optional(),
  },
  'must be a JSON object or null',
);

/**
 * The body of PUT /v1/personalities/:id and the input of upsertPersonality().
 * On create, an absent `isActive` is true and an absent `temperature` /
 * `maxTokens` take the column defaults (0.7, 1024). On update, an absent
 * optional field keeps its stored value; `llmConfig: null` removes the config.
 */
export const personalityInputSchema = exactObject(
  {
    name: text(1, MAX_PERSONALITY_NAME),
    displayName: text(1, MAX_PERSONALITY_NAME),
    systemPrompt: text(1, MAX_SYSTEM_PROMPT),
    isActive: z.boolean({ error: 'must be true or false' }).optional(),
    llmConfig: llmConfigInputSchema.nullable().optional(),
  },
  'must be a JSON object',
);

export type PersonalityInput = z.output<typeof personalityInputSchema>;
export type LlmConfigInput = z.output<typeof llmConfigInputSchema>;

/** Throws ValidationError naming the field ("name", "llmConfig.temperature", "body"). */
export const validatePersonalityInput = (input: unknown): PersonalityInput => parseInput(personalityInputSchema, input);
