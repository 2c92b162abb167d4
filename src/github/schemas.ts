import { z } from 'zod';

/** What the hub reads of GitHub's responses; anything else in them is ignored. */
export const userSchema = z.object({
  login: z.string(),
  id: z.number(),
  type: z.string().default('User'),
});

export const repositorySchema = z.object({
  id: z.number(),
  full_name: z.string(),
  clone_url: z.string(),
  html_url: z.string(),
  private: z.boolean().default(false),
  default_branch: z.string().optional(),
});

export const issueSchema = z.object({
  id: z.number(),
  number: z.number(),
  title: z.string(),
  body: z.string().nullable().default(null),
  state: z.string(),
  user: userSchema.nullable(),
  html_url: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  pull_request: z.unknown().optional(),
});

export const commentSchema = z.object({
  id: z.number(),
  body: z.string().nullable().default(null),
  user: userSchema.nullable(),
  html_url: z.string().optional(),
  created_at: z.string(),
  updated_at: z.string(),
});

export const permissionSchema = z.object({
  permission: z.string(),
  role_name: z.string().optional(),
});

/** A pull request, as the pulls endpoints answer it. */
export const pullRequestSchema = z.object({
  number: z.number(),
  html_url: z.string(),
  state: z.string(),
  draft: z.boolean().default(false),
  head: z.object({ ref: z.string(), label: z.string().optional() }),
  base: z.object({ ref: z.string() }),
});

/** A pull request review. `state` is the REST API's upper case: `CHANGES_REQUESTED`, `APPROVED`… */
export const reviewSchema = z.object({
  id: z.number(),
  user: userSchema.nullable(),
  body: z.string().nullable().default(null),
  state: z.string(),
  html_url: z.string().optional(),
  submitted_at: z.string().optional(),
});

/** A review comment: a comment on a line (or, without `line`, the whole file) of a pull request's diff. */
export const reviewCommentSchema = z.object({
  id: z.number(),
  pull_request_review_id: z.number().nullable(),
  user: userSchema.nullable(),
  body: z.string().nullable().default(null),
  path: z.string(),
  line: z.number().nullable().optional(),
  original_line: z.number().nullable().optional(),
  html_url: z.string().optional(),
  created_at: z.string(),
  updated_at: z.string(),
});

export type GitHubReview = z.infer<typeof reviewSchema>;
export type GitHubReviewComment = z.infer<typeof reviewCommentSchema>;

/** `GET /repos/{owner}/{repo}/compare/{base}...{head}`: what the head has that the base lacks. */
export const compareSchema = z.object({
  status: z.string(),
  ahead_by: z.number(),
  behind_by: z.number(),
  files: z
    .array(z.object({ filename: z.string(), additions: z.number(), deletions: z.number() }))
    .default([]),
});

/** A reaction, as the reactions endpoints answer it. */
export const reactionSchema = z.object({
  id: z.number(),
  content: z.string(),
  user: userSchema.nullable(),
});

export type GitHubUser = z.infer<typeof userSchema>;
export type GitHubRepository = z.infer<typeof repositorySchema>;
export type GitHubIssue = z.infer<typeof issueSchema>;
export type GitHubComment = z.infer<typeof commentSchema>;
export type GitHubPullRequest = z.infer<typeof pullRequestSchema>;
export type GitHubCompare = z.infer<typeof compareSchema>;

/** Bots (GitHub Apps, dependabot, this hub's own token if it is one) never launch anything. */
export const isBot = (user: GitHubUser | null) =>
  !user || user.type === 'Bot' || user.login.endsWith('[bot]');
