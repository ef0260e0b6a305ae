"""Column, entity and key names shared by simulator, features, training and serving."""

USER_ID = "user_id"
POST_ID = "post_id"
AUTHOR_ID = "author_id"
TOPIC = "topic"
EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
REQUEST_ID = "request_id"
POSITION = "position"
LABEL = "label"

# Interaction kinds, in the order of their value to the ranking objective.
IMPRESSION = "impression"
LIKE = "like"
COMMENT = "comment"
SAVE = "save"
ENGAGEMENT_KINDS = (LIKE, COMMENT, SAVE)
# Graded relevance used by the LambdaRank objective: 0 nothing, 1 like, 2 comment, 3 save.
RELEVANCE = {LIKE: 1, COMMENT: 2, SAVE: 3}

# Feature names served online (Feast view name prefixes them in retrieval results).
USER_FEATURES = ("user_impressions_7d", "user_likes_7d", "user_like_rate_7d", "user_following")
POST_FEATURES = ("post_impressions", "post_likes", "post_like_rate", "post_topic")
AUTHOR_FEATURES = ("author_followers", "author_posts_7d", "author_like_rate_7d")
REQUEST_FEATURES = ("post_age_h", "position_hint")

SECONDS_PER_DAY = 86_400
